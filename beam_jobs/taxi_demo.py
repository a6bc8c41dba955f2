"""The taxi half of the demo: generated CSV -> Examples -> analyze_and_transform -> transform.

    python -m beam_jobs.taxi_demo --work_dir /tmp/taxi_demo

Span 1 is ingested and analyzed (its train split fixes the vocabularies, quantiles and
means); span 2, a later shifted draw, is transformed with that same transform_fn.
"""

import argparse
import logging
import os

from beam_jobs import analyze_and_transform, options, synthetic_taxi, taxi_csv_to_tfrecord, transform


def run_taxi_demo(work_dir: str, rows: int = 3000, beam_args=()) -> dict:
    """Runs the four steps into work_dir; returns their run summaries by step name."""
    span1, span2 = synthetic_taxi.write_spans(os.path.join(work_dir, "csv"), rows=rows)
    paths = {name: os.path.join(work_dir, name) for name in ("examples", "examples_span2", "transformed",
                                                             "transformed_span2")}
    beam_args = list(beam_args)
    summaries = {
        "ingest": taxi_csv_to_tfrecord.run(["--input", span1, "--output_dir", paths["examples"], *beam_args]),
        "ingest_span2": taxi_csv_to_tfrecord.run(["--input", span2, "--output_dir", paths["examples_span2"],
                                                  *beam_args]),
    }
    summaries["analyze_and_transform"] = analyze_and_transform.run([
        "--dataset", "taxi", "--examples_dir", paths["examples"], "--output_dir", paths["transformed"], *beam_args])
    summaries["transform_span2"] = transform.run([
        "--transform_dir", paths["transformed"], "--examples_dir", paths["examples_span2"],
        "--output_dir", paths["transformed_span2"], *beam_args])
    logging.info(
        "taxi demo: transform_fn in %s/transform_fn; dead letters in %s/dead_letter/. A trainer imports it with\n"
        "    from transforms.trainer import TransformOutput\n"
        "    output = TransformOutput(%r)\n"
        "    train = output.input_fn('train', batch_size=256, label_key='big_tipper')\n"
        "    serve = output.serving_fn(model, raw_label_keys=['tips'])  # raw serialized Examples in",
        paths["transformed"], paths["examples"], paths["transformed"])
    return summaries


def run(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--rows", type=int, default=3000, help="Rows of span 1 (span 2 has a third).")
    args, beam_args = parser.parse_known_args(argv)
    return run_taxi_demo(args.work_dir, args.rows, beam_args)


if __name__ == "__main__":
    options.run_main(run)
