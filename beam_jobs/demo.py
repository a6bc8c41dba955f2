"""End-to-end demo on data the project generates itself: `bash scripts/demo.sh`.

1. QuickDraw-like ndjson (both formats, a gzip file, a few malformed lines) -> Examples.
2. Taxi-like CSV, two spans (span 2 later, shifted, with a payment type span 1 never had)
   -> Examples -> analyze_and_transform on span 1 -> transform span 2 with the same transform_fn.
3. Statistics -> inferred draft schema -> validate span 2 against the curated schema with
   drift against span 1: HTML reports and the gate's verdict.

Everything runs on the DirectRunner unless Beam flags say otherwise (they are passed on).
"""

import argparse
import os

from beam_jobs import options, quickdraw_to_tfrecord, synthetic, taxi_demo, validation_demo


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="demo_output", help="Where data and outputs go.")
    args, beam_args = parser.parse_known_args(argv)
    root = os.path.abspath(args.output_dir)

    qd_data, qd_out = os.path.join(root, "data", "quickdraw"), os.path.join(root, "quickdraw")
    synthetic.make_quickdraw(qd_data)
    quickdraw = quickdraw_to_tfrecord.run(
        [f"--input={qd_data}/*", f"--output_dir={qd_out}", "--image_size=28", "--num_shards=2", *beam_args])

    taxi_dir = os.path.join(root, "taxi")
    taxi = taxi_demo.run_taxi_demo(taxi_dir, beam_args=beam_args)
    validation = validation_demo.run_validation_demo(
        os.path.join(root, "validation"), os.path.join(taxi_dir, "examples"),
        os.path.join(taxi_dir, "examples_span2"), quickdraw_examples=qd_out, beam_args=beam_args)

    print(f"\nDemo finished; everything is under {root}")
    print(f"  generated inputs        {root}/data/quickdraw/, {taxi_dir}/csv/")
    print(f"  QuickDraw Examples      {qd_out}/{{train,eval,test}}-*.tfrecord  (labels.txt, samples.png)")
    print(f"  QuickDraw dead letters  {qd_out}/dead_letter/  "
          f"({sum(quickdraw['rejected'].values())} rejected of {quickdraw['read']} lines)")
    print(f"  taxi Examples           {taxi_dir}/examples/, {taxi_dir}/examples_span2/  "
          f"({sum(taxi['ingest']['rejected'].values())} rows of span 1 in dead_letter/)")
    print(f"  transform_fn            {taxi_dir}/transformed/transform_fn/")
    print(f"  transformed span 2      {taxi_dir}/transformed_span2/")
    print("  a trainer imports it:   from transforms.trainer import TransformOutput")
    print(f"                          output = TransformOutput({os.path.join(taxi_dir, 'transformed')!r})")
    print("                          train = output.input_fn('train', batch_size=256, label_key='big_tipper')")
    validation_demo.print_verdict(validation)
    return {"quickdraw": quickdraw, "taxi": taxi, "validation": validation}


if __name__ == "__main__":
    options.run_main(run)
