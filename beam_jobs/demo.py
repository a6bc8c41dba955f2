"""End-to-end demo on data the project generates itself: `bash scripts/demo.sh`.

Generates QuickDraw-like ndjson (both formats, a gzip file, a few malformed lines) under
DIR/data/ and runs the QuickDraw job on the DirectRunner.
"""

import argparse
import json
import logging
import os

from beam_jobs import options, quickdraw_to_tfrecord, synthetic


def run(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="demo_output", help="Where data and outputs go.")
    args, beam_args = parser.parse_known_args(argv)
    root = os.path.abspath(args.output_dir)
    data = os.path.join(root, "data", "quickdraw")
    synthetic.make_quickdraw(data)
    qd_out = os.path.join(root, "quickdraw")
    summary = quickdraw_to_tfrecord.run(
        [f"--input={data}/*", f"--output_dir={qd_out}", "--image_size=28", "--num_shards=2"] + beam_args)
    print("\nDemo finished. Outputs:")
    print(f"  QuickDraw Examples   {qd_out}/{{train,eval,test}}-*.tfrecord")
    print(f"  class list           {qd_out}/labels.txt")
    print(f"  contact sheet        {qd_out}/samples.png")
    print(f"  dead letters         {qd_out}/dead_letter/ ({sum(summary['rejected'].values())} rejected lines)")
    print(f"  run summary          {qd_out}/run_summary.json")
    print("  counts:", json.dumps({k: summary[k] for k in ("read", "blank", "written", "rejected", "filtered")}))


if __name__ == "__main__":
    options.run_main(run)
