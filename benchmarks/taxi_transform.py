"""Taxi ingest + analyze-and-transform benchmark: `python -m benchmarks.taxi_transform [--rows N]`.

On the real taxi sample (../shared/data/taxi/data.csv) replicated to N rows (default 200,000)
in a few CSV files, it runs, one after the other, each in its own process (for its own peak
memory), the same preprocessing_fn (transforms.taxi.preprocessing) four ways:

  ours           taxi_csv_to_tfrecord (CSV -> Examples, splits, dead letters) then
                 analyze_and_transform (TFXIO RecordBatches, analyze train, transform all)
  instance_dict  the common tutorial path: ReadFromText, csv-module parse into instance dicts,
                 tft_beam.AnalyzeAndTransformDataset, EncodeTransformedDataset, WriteToTFRecord
  tfxio_plain    tfx_bsl CsvTFXIO RecordBatches into AnalyzeAndTransformDataset
                 (output_record_batches), EncodeTransformedDataset, WriteToTFRecord
  floor          one process, no Beam/TFT: pyarrow CSV read, numpy analyzers and transforms,
                 tfx_bsl Example encoding, tf.io.TFRecordWriter

and prints rows/s ratios (ours over theirs), ours' wall time over the floor's, and ours' peak
RSS at N and at N/5 (flat memory means these stay close). The last line is one JSON object.
Timings include pipeline start-up but not the (shared) library imports.
"""

import argparse
import csv
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

_SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "taxi", "data.csv")
VARIANTS = ("ours", "instance_dict", "tfxio_plain", "floor")


def make_input(directory: str, rows: int, files: int = 4) -> None:
    """The sample's rows repeated to `rows`, dealt over `files` CSV files with the header."""
    with open(_SAMPLE, newline="") as handle:
        lines = handle.read().splitlines()
    header, body = lines[0], lines[1:]
    handles = [open(os.path.join(directory, f"part-{i}.csv"), "w") for i in range(files)]
    for handle in handles:
        handle.write(header + "\n")
    for i in range(rows):
        handles[i % files].write(body[i % len(body)] + "\n")
    for handle in handles:
        handle.close()


def _schema():
    from beam_jobs import taxi_csv_to_tfrecord, tft_pipeline

    return tft_pipeline.optional_single_values(taxi_csv_to_tfrecord.load_schema(taxi_csv_to_tfrecord.DEFAULT_SCHEMA))


def run_ours(input_dir: str, work: str, beam_args) -> dict:
    """The two jobs one after the other; their seconds."""
    from beam_jobs import analyze_and_transform, taxi_csv_to_tfrecord

    start = time.perf_counter()
    taxi_csv_to_tfrecord.run(["--input", os.path.join(input_dir, "*.csv"), "--output_dir", f"{work}/examples",
                              *beam_args])
    ingest = time.perf_counter() - start
    analyze_and_transform.run(["--dataset", "taxi", "--examples_dir", f"{work}/examples",
                               "--output_dir", f"{work}/transformed", *beam_args])
    return {"ingest": round(ingest, 3), "analyze_and_transform": round(time.perf_counter() - start - ingest, 3)}


def _parse_instance(line: str, names, types) -> dict:
    """A CSV line -> an instance dict (one-value lists; [] for an empty cell)."""
    fields = next(csv.reader([line]))
    instance = {}
    for name, text in zip(names, fields):
        kind = types[name]
        if text == "":
            instance[name] = []
        elif kind == "INT":
            instance[name] = [int(float(text))]
        elif kind == "FLOAT":
            instance[name] = [float(text)]
        else:
            instance[name] = [text.encode()]
    return instance


def run_instance_dict(input_dir: str, work: str, beam_args) -> None:
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata

    from beam_jobs import csv_rows, taxi_csv_to_tfrecord
    from transforms.taxi import preprocessing

    schema = _schema()
    types = taxi_csv_to_tfrecord.column_types(schema)
    names = csv_rows.read_header(sorted(glob.glob(os.path.join(input_dir, "*.csv")))[0])
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        with tft_beam.Context(temp_dir=f"{work}/tmp"):
            instances = (pipeline
                         | beam.io.ReadFromText(os.path.join(input_dir, "*.csv"), skip_header_lines=1)
                         | beam.Map(_parse_instance, names, types))
            transformed, _ = ((instances, dataset_metadata.DatasetMetadata(schema))
                              | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn))
            _ = (transformed | tft_beam.EncodeTransformedDataset()
                 | beam.io.WriteToTFRecord(f"{work}/out/transformed"))


def run_tfxio_plain(input_dir: str, work: str, beam_args) -> None:
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.public import tfxio

    from beam_jobs import csv_rows
    from transforms.taxi import preprocessing

    names = csv_rows.read_header(sorted(glob.glob(os.path.join(input_dir, "*.csv")))[0])
    source = tfxio.CsvTFXIO(os.path.join(input_dir, "*.csv"), column_names=names, schema=_schema(),
                            skip_header_lines=1)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        with tft_beam.Context(temp_dir=f"{work}/tmp"):
            record_batches = pipeline | source.BeamSource()
            transformed, _ = ((record_batches, source.TensorAdapterConfig())
                              | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn,
                                                                    output_record_batches=True))
            _ = (transformed | tft_beam.EncodeTransformedDataset()
                 | beam.io.WriteToTFRecord(f"{work}/out/transformed"))


def run_floor(input_dir: str, work: str, beam_args) -> dict:
    """The same analyzers and transforms with pyarrow and numpy in one process; stage timings."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    from beam_jobs import taxi_csv_to_tfrecord
    from transforms.taxi import features

    types = taxi_csv_to_tfrecord.column_types(_schema())
    arrow_types = {"INT": pa.int64(), "FLOAT": pa.float64(), "BYTES": pa.string()}
    stages = {}
    start = time.perf_counter()
    table = pa.concat_tables([
        pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={name: arrow_types[kind] for name, kind in types.items()},
            strings_can_be_null=True))
        for path in sorted(glob.glob(os.path.join(input_dir, "*.csv")))])
    stages["read"] = time.perf_counter() - start

    def filled(name, value):
        return pc.fill_null(table[name], value).to_numpy()

    start = time.perf_counter()
    stats = {}
    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        x = filled(key, 0).astype(np.float32)
        stats[key] = (x.mean(dtype=np.float64), x.std(dtype=np.float64))
    boundaries = {}
    for key, n in features.BUCKET_FEATURES.items():
        present = table[key].drop_null().to_numpy().astype(np.float32)
        boundaries[key] = np.unique(np.quantile(present, np.arange(1, n) / n))
    vocabularies = {}
    for key in features.VOCAB_FEATURES:
        counts = pc.value_counts(pc.fill_null(table[key], features.MISSING_TOKEN).combine_chunks())
        order = np.argsort(-counts.field("counts").to_numpy(), kind="stable")
        vocabularies[key] = counts.field("values").take(pa.array(order))
    stages["analyze"] = time.perf_counter() - start

    start = time.perf_counter()
    columns = {}
    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        mean, std = stats[key]
        columns[features.transformed_name(key)] = ((filled(key, 0).astype(np.float32) - mean) / std).astype(np.float32)
    for key, n in features.BUCKET_FEATURES.items():
        values = pc.fill_null(table[key], np.nan).to_numpy().astype(np.float32)
        buckets = np.searchsorted(boundaries[key], values, side="right").astype(np.int64)
        columns[features.transformed_name(key)] = np.where(np.isnan(values), n, buckets)
    for key, (_, oov) in features.VOCAB_FEATURES.items():
        index = pc.index_in(pc.fill_null(table[key], features.MISSING_TOKEN), value_set=vocabularies[key])
        columns[features.transformed_name(key)] = pc.fill_null(index, len(vocabularies[key])).to_numpy().astype(np.int64)
    for key in features.CATEGORICAL_INT_FEATURE_KEYS:
        columns[features.transformed_name(key)] = filled(key, 0).astype(np.int64)
    day, hour = filled("trip_start_day", 0), filled("trip_start_hour", -1)
    valid = (day >= 1) & (day <= 7) & (hour >= 0) & (hour <= 23)
    columns["hour_of_week_xf"] = np.where(valid, (day - 1) * 24 + hour, features.HOUR_OF_WEEK_UNKNOWN)
    fare = pc.fill_null(table["fare"], np.nan).to_numpy().astype(np.float32)
    tips = filled("tips", 0).astype(np.float32)
    columns[features.LABEL_KEY] = np.where(np.isnan(fare), 0, tips > fare * np.float32(0.2)).astype(np.int64)
    stages["transform"] = time.perf_counter() - start

    start = time.perf_counter()
    encoder = example_coder.RecordBatchToExamplesEncoder()
    rows = table.num_rows
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32))
    batch = pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, pa.array(v)) for v in columns.values()],
                                       list(columns))
    encoded = []
    for begin in range(0, rows, 100_000):
        encoded.extend(encoder.encode(batch.slice(begin, 100_000)))
    stages["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    os.makedirs(f"{work}/out", exist_ok=True)
    with tf.io.TFRecordWriter(f"{work}/out/transformed.tfrecord") as writer:
        for record in encoded:
            writer.write(record)
    stages["write"] = time.perf_counter() - start
    return {name: round(seconds, 3) for name, seconds in stages.items()}


def child(variant: str, input_dir: str, work: str, beam_args) -> None:
    """Runs one variant in this process; prints seconds and peak RSS as JSON."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    # Library imports are the same for every variant: keep them out of the timing.
    import apache_beam  # noqa: F401
    import tensorflow  # noqa: F401
    import tensorflow_transform.beam  # noqa: F401
    import tfx_bsl.public.tfxio  # noqa: F401

    start = time.perf_counter()
    stages = globals()[f"run_{variant}"](input_dir, work, beam_args)
    seconds = time.perf_counter() - start
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"variant": variant, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_kb / 1024),
                      "stages": stages}), flush=True)
    # TF can crash while the interpreter tears down after a TFT pipeline; the figures are out.
    os._exit(0)


def measure(variant: str, input_dir: str, beam_args) -> dict:
    work = tempfile.mkdtemp(prefix=f"taxi_bench_{variant}_")
    try:
        out = subprocess.run([sys.executable, "-m", "benchmarks.taxi_transform", "--child", variant,
                              "--input_dir", input_dir, "--work", work, *beam_args],
                             check=True, capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except subprocess.CalledProcessError as error:
        sys.stderr.write(error.stderr[-5000:])
        raise
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--input_dir", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args, beam_args = parser.parse_known_args(argv)
    if args.child:
        child(args.child, args.input_dir, args.work, beam_args)
        return {}
    root = tempfile.mkdtemp(prefix="taxi_bench_input_")
    try:
        big, small = f"{root}/big", f"{root}/small"
        os.makedirs(big), os.makedirs(small)
        make_input(big, args.rows)
        make_input(small, args.rows // 5)
        results = {}
        for variant in VARIANTS:
            results[variant] = measure(variant, big, beam_args)
            r = results[variant]
            print(f"{variant:14s} {r['seconds']:8.1f} s  {args.rows / r['seconds']:10,.0f} rows/s  "
                  f"peak {r['peak_rss_mb']:,} MB  {r['stages'] or ''}", flush=True)
        small_ours = measure("ours", small, beam_args)
        print(f"ours at {args.rows // 5:,} rows: {small_ours['seconds']:.1f} s, peak {small_ours['peak_rss_mb']:,} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ours = results["ours"]["seconds"]
    summary = {
        "rows": args.rows,
        "vs_instance_dict": round(results["instance_dict"]["seconds"] / ours, 2),
        "vs_tfxio_plain": round(results["tfxio_plain"]["seconds"] / ours, 2),
        "ours_over_floor": round(ours / results["floor"]["seconds"], 2),
        "peak_rss_mb": results["ours"]["peak_rss_mb"],
        "peak_rss_mb_at_fifth": small_ours["peak_rss_mb"],
        "seconds": {variant: r["seconds"] for variant, r in results.items()},
        "floor_stages": results["floor"]["stages"],
        "beam_args": beam_args,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
