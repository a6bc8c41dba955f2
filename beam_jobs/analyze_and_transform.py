"""Analyze the train split with TFT, transform every split, and save the reusable transform_fn.

Reads the Example TFRecords an ingest job wrote (`--examples_dir`, {train,eval,test}-*) through
tfx_bsl's TFXIO as RecordBatches, with the raw schema of `--dataset`:

    taxi       schemas/taxi/schema.pbtxt (or --schema), one-value features read as optional
    quickdraw  derived from transforms.quickdraw.features.feature_spec(image size found in the data)

runs the analyzers on the **train split only**, applies that one transform_fn to every split,
and writes

    OUT/transform_fn/                  the SavedModel trainers and servers load (tft.TFTransformOutput)
    OUT/transformed_metadata/          schema of the transformed features
    OUT/metadata/                      the raw schema (serving parses raw Examples with it)
    OUT/{train,eval,test}-SSSSS-of-NNNNN.tfrecord[.gz]   transformed Examples, sorted shards
    OUT/run_summary.json               counts; written last, when all is in place

TFT's temp dir lives inside OUT's staging directory: a failed run leaves nothing behind that
looks complete. `--preprocessing_fn module:function` replaces the dataset's own.

DirectRunner (default):
    python -m beam_jobs.analyze_and_transform --dataset taxi --examples_dir out/taxi \\
        --output_dir out/taxi_transformed

Two local worker processes:
    ... --direct_num_workers=2 --direct_running_mode=multi_processing

Flink (a local cluster, SDK harness in this process):
    ... --runner=FlinkRunner --flink_master=localhost:8081 --environment_type=LOOPBACK

Dataflow:
    ... --examples_dir gs://BUCKET/taxi --output_dir gs://BUCKET/taxi_transformed \\
        --runner=DataflowRunner --project=PROJECT --region=REGION \\
        --temp_location=gs://BUCKET/tmp --setup_file=./setup.py
"""

import argparse
import re

from beam_jobs import options, taxi_csv_to_tfrecord, tft_pipeline

_JOB = "analyze_and_transform"
DATASETS = {
    "taxi": "transforms.taxi.preprocessing:preprocessing_fn",
    "quickdraw": "transforms.quickdraw.preprocessing:preprocessing_fn",
}


def quickdraw_image_size(files) -> int:
    """The N of the `img_N` feature in the first Example of the given files."""
    import tensorflow as tf

    for path in files:
        compression = "GZIP" if path.endswith(".gz") else ""
        for record in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
            keys = tf.train.Example.FromString(record.numpy()).features.feature.keys()
            sizes = [int(m.group(1)) for m in (re.fullmatch(r"img_(\d+)", k) for k in keys) if m]
            if len(sizes) != 1:
                raise options.UsageError(f"{path}: first Example has no single img_N feature; is it QuickDraw data?")
            return sizes[0]
    raise options.UsageError("the QuickDraw Examples are all empty; nothing to analyze")


def raw_schema(dataset: str, schema_path, files):
    """The raw schema the TFXIO reads with (and that serving parses raw Examples with)."""
    if dataset == "taxi":
        return tft_pipeline.optional_single_values(
            taxi_csv_to_tfrecord.load_schema(schema_path or taxi_csv_to_tfrecord.DEFAULT_SCHEMA))
    from tensorflow_transform.tf_metadata import schema_utils

    from transforms.quickdraw import features

    if schema_path:
        return taxi_csv_to_tfrecord.load_schema(schema_path)
    image_size = quickdraw_image_size([path for split_files in files.values() for path in split_files])
    return schema_utils.schema_from_feature_spec(features.feature_spec(image_size))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--examples_dir", required=True, help="Output directory of an ingest job.")
    parser.add_argument("--output_dir", required=True, help="Directory for transform_fn and transformed Examples.")
    parser.add_argument("--schema", help="Raw schema .pbtxt (default: the dataset's own, see above).")
    parser.add_argument("--preprocessing_fn", help="module:function to use instead of the dataset's own.")
    tft_pipeline.add_output_args(parser)
    return options.parse(parser, argv)


def run(argv=None) -> dict:
    """Runs the job; returns the run summary (also written to OUT/run_summary.json)."""
    import tensorflow_transform.beam as tft_beam

    args, pipeline_options = parse_args(argv)
    preprocessing_fn = tft_pipeline.load_function(args.preprocessing_fn or DATASETS[args.dataset])
    files = tft_pipeline.split_files(args.examples_dir)
    if not files["train"]:
        raise options.UsageError(f"{args.examples_dir} has no train split to analyze")
    schema = raw_schema(args.dataset, args.schema, files)

    def analyze_train(pipeline, staging_dir, decoder_path):
        # The analysis reads the train split on its own: fed from the transform's reading,
        # the runner would hold every decoded train batch until the analysis is done.
        train, analysis_config = tft_pipeline.read_raw_splits(
            pipeline, {"train": files["train"]}, decoder_path, args.batch_size, stage="ReadForAnalysis",
            with_order=False)
        transform_fn = ((train["train"], analysis_config)
                        | "AnalyzeTrain" >> tft_beam.AnalyzeDataset(preprocessing_fn))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging_dir)
        tft_pipeline.write_raw_metadata(schema, staging_dir)
        return transform_fn

    return tft_pipeline.transform_and_publish(
        _JOB, args, pipeline_options, files=files, schema=schema, owned=tft_pipeline.owned_globs(),
        transform_fn_for=analyze_train, transform_dir=args.output_dir, extra={"dataset": args.dataset})


if __name__ == "__main__":
    options.run_main(run)
