"""Apply a saved transform_fn to new Examples, with no analysis (e.g. a new span of data).

`--transform_dir` is an analyze_and_transform output: its transform_fn/ is applied as it is
(the vocabularies, quantiles and means of the data it was analyzed on) and its metadata/
gives the raw schema the Examples are read with. Writes

    OUT2/{train,eval,test}-SSSSS-of-NNNNN.tfrecord[.gz]   transformed Examples, sorted shards
    OUT2/run_summary.json

Each row gives the same bytes, in the same order, as analyze_and_transform writes for it.

DirectRunner (default):
    python -m beam_jobs.transform --transform_dir out/taxi_transformed \\
        --examples_dir out/taxi_span2 --output_dir out/taxi_span2_transformed

Two local worker processes:
    ... --direct_num_workers=2 --direct_running_mode=multi_processing

Flink (a local cluster, SDK harness in this process):
    ... --runner=FlinkRunner --flink_master=localhost:8081 --environment_type=LOOPBACK

Dataflow:
    ... --transform_dir gs://BUCKET/taxi_transformed --examples_dir gs://BUCKET/span2 \\
        --output_dir gs://BUCKET/span2_transformed --runner=DataflowRunner --project=PROJECT \\
        --region=REGION --temp_location=gs://BUCKET/tmp --setup_file=./setup.py
"""

import argparse

from beam_jobs import options, tft_pipeline

_JOB = "transform"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transform_dir", required=True, help="Output directory of analyze_and_transform.")
    parser.add_argument("--examples_dir", required=True, help="Output directory of an ingest job.")
    parser.add_argument("--output_dir", required=True, help="Directory for the transformed Examples.")
    tft_pipeline.add_output_args(parser)
    return options.parse(parser, argv)


def run(argv=None) -> dict:
    """Runs the job; returns the run summary (also written to OUT2/run_summary.json)."""
    import tensorflow_transform.beam as tft_beam

    args, pipeline_options = parse_args(argv)
    schema = tft_pipeline.read_raw_schema(args.transform_dir)
    files = tft_pipeline.split_files(args.examples_dir)
    owned = [glob for glob in tft_pipeline.owned_globs() if glob.endswith(".tfrecord*")]
    return tft_pipeline.transform_and_publish(
        _JOB, args, pipeline_options, files=files, schema=schema, owned=owned,
        transform_fn_for=lambda pipeline, *_: pipeline | "ReadTransformFn" >> tft_beam.ReadTransformFn(args.transform_dir),
        transform_dir=args.transform_dir, extra={})


if __name__ == "__main__":
    options.run_main(run)
