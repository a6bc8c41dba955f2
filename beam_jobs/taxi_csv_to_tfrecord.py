"""Chicago taxi CSV -> tf.train.Example TFRecords, split train/eval/test (the ExampleGen step).

Column names come from each file's header line (or `--column_names` for headerless files),
types from the schema (`--schema`, default `schemas/taxi/schema.pbtxt`: INT -> int64, FLOAT
-> float, BYTES -> bytes). An empty cell leaves the feature out of the Example. Writes

    DIR/{train,eval,test}-SSSSS-of-NNNNN.tfrecord[.gz]   Examples, one feature per CSV column
    DIR/dead_letter/dead_letter-00000-of-00001.jsonl    rejected records: file, line, column, reason
    DIR/run_summary.json                                counts; written last, when all is in place

A record with the wrong number of columns, or a cell that does not parse as its column's type
(`twelve` in a FLOAT column, `7.5` in an INT one; `8.0` is a valid INT), is dead-lettered and
the job goes on. `read == blank + sum(written) + sum(rejected)`.

Splits are a hash of the whole record (or of `--split_key COLUMN`'s text); shards are sorted
by that hash, so the same input and flags give the same bytes on any runner.

DirectRunner (default):
    python -m beam_jobs.taxi_csv_to_tfrecord --input 'data/*.csv' --output_dir out/taxi

Two local worker processes:
    ... --direct_num_workers=2 --direct_running_mode=multi_processing

Flink (a local cluster, SDK harness in this process):
    ... --runner=FlinkRunner --flink_master=localhost:8081 --environment_type=LOOPBACK

Dataflow:
    ... --input 'gs://BUCKET/taxi/*.csv' --output_dir gs://BUCKET/taxi_examples \\
        --runner=DataflowRunner --project=PROJECT --region=REGION \\
        --temp_location=gs://BUCKET/tmp --setup_file=./setup.py
"""

import argparse
import logging
from typing import Dict, List, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

import schemas
from beam_jobs import csv_rows, dead_letters, example_bytes, inputs, local_workers, options, outputs, runs, splits, stats_io
from beam_jobs.progress import Progress

_JOB = "taxi_csv_to_tfrecord"
DEFAULT_SCHEMA = schemas.path("taxi")
_SCHEMA_TYPES = {1: csv_rows.BYTES, 2: csv_rows.INT, 3: csv_rows.FLOAT}  # schema_pb2.FeatureType


def load_schema(path: str):
    """The schema proto, read on the launcher (workers get the proto, not the file)."""
    if not FileSystems.exists(path):
        raise options.UsageError(f"schema {path!r} not found; pass --schema")
    return stats_io.load_schema(path)


def column_types(schema) -> Dict[str, str]:
    """Feature name -> INT/FLOAT/BYTES, in schema order."""
    types = {}
    for feature in schema.feature:
        if feature.type not in _SCHEMA_TYPES:
            raise options.UsageError(f"schema feature {feature.name!r} has no INT/FLOAT/BYTES type")
        types[feature.name] = _SCHEMA_TYPES[feature.type]
    return types


class FileColumns(NamedTuple):
    path: str
    names: List[str]
    skip_header: bool


def resolve_columns(paths: Sequence[str], types: Dict[str, str],
                    column_names: Optional[List[str]]) -> List[FileColumns]:
    """Each file's column names (its header, or --column_names), checked against the schema."""
    resolved = []
    for path in paths:
        names = column_names or csv_rows.read_header(path)
        where = "--column_names" if column_names else f"{path}:1 (header)"
        unknown = [name for name in names if name not in types]
        if unknown:
            raise options.UsageError(
                f"{where}: column(s) {unknown} are not in the schema; fix the header, pass "
                f"--column_names, or use a --schema that has them")
        if len(set(names)) != len(names):
            raise options.UsageError(f"{where}: duplicate column names {names}")
        resolved.append(FileColumns(path, names, skip_header=not column_names))
    return resolved


def _list_array(values: pa.Array) -> pa.Array:
    """One value per row as a list<T> column; a missing value is a null list."""
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values, mask=values.is_null())


def encode_examples(values: Dict[str, pa.Array], types: Dict[str, str]) -> pa.Array:
    """Serialized Examples, features in schema order, a missing value left out of its Example."""
    names = [name for name in types if name in values]
    if not names:
        raise ValueError("no column to encode")
    return example_bytes.encode_by_column(
        pa.RecordBatch.from_arrays([_list_array(values[name]) for name in names], names))


class CsvToExamplesFn(runs.SpillingDoFn):
    """A CSV file (FileColumns) -> ((split, shard), run file of Examples); dead letters
    and counts tagged.

    The file is read whole here (line numbers need it), in batches of records that are
    converted and encoded together; batches never leave the DoFn, as Beam would pickle them
    to estimate their size. Examples are spilled to run files in `temp_dir`
    (runs.SpillBuffer), so only file names go through the shuffle. The order inside a
    shard is the hash of the whole record (also with --split_key: a few split key values
    would make key ranges of very different sizes), then the file and line.
    """

    DEAD_LETTER_TAG = "dead_letters"
    COUNTS_TAG = "counts"

    def __init__(self, *, paths: Sequence[str], temp_dir: str, range_bits: int, types: Dict[str, str],
                 split_key: Optional[str], split_ratios, num_shards: int, batch_size: int):
        super().__init__(temp_dir, range_bits)
        self._path_index = {path: i for i, path in enumerate(sorted(paths))}
        self._shard_keys = splits.shard_keys(num_shards)
        self._types, self._split_key = dict(types), split_key
        self._split_ratios, self._num_shards, self._batch_size = split_ratios, num_shards, batch_size

    def setup(self):
        self._rejections = dead_letters.RejectionLog(_JOB)
        self._read = beam.metrics.Metrics.counter(_JOB, "read")
        self._progress = Progress(_JOB, "records")

    def process(self, file_columns: FileColumns):
        for batch in csv_rows.typed_batches(file_columns.path, file_columns.names, self._types,
                                            file_columns.skip_header, self._batch_size):
            yield from self._write(batch)

    def _write(self, batch: csv_rows.TypedBatch):
        counts: Dict[str, int] = {"read": batch.read, "blank": batch.blank}
        for line, error, text in batch.rejected:
            letter = dead_letters.dead_letter(batch.path, line, error.reason, error.detail, text, column=error.column)
            self._rejections.reject(letter, counts)
            yield pvalue.TaggedOutput(self.DEAD_LETTER_TAG, letter)
        self._read.inc(batch.read)
        self._progress.add(batch.read)
        if batch.lines:
            examples = encode_examples(batch.values, self._types)
            rows = pc.binary_join_element_wise(*batch.texts.values(), "\x1f").cast(pa.binary()).to_pylist()
            keys = batch.texts[self._split_key].cast(pa.binary()).to_pylist() if self._split_key else rows
            split_of = splits.split_indices(keys, self._split_ratios)
            for split_index, n in enumerate(np.bincount(split_of, minlength=len(splits.SPLIT_NAMES)).tolist()):
                if n:
                    counts["written." + splits.SPLIT_NAMES[split_index]] = n
            shard_of = splits.shard_indices(keys, self._num_shards)
            orders = runs.line_orders(self._path_index[batch.path], batch.lines)
            self._runs.add(runs.rows(splits.key_hashes(rows), orders, examples), self._shard_keys,
                           splits.shard_key_indices(split_of, shard_of, self._num_shards))
        yield pvalue.TaggedOutput(self.COUNTS_TAG, counts)
        if self._runs.full:
            yield from self._runs.spill()


class CsvResult(NamedTuple):
    runs: beam.PCollection  # ((split, shard), run file of serialized Examples)
    dead_letters: beam.PCollection  # dead letter dicts
    counts: beam.PCollection  # {name: n} dicts to sum


class CsvToExamples(beam.PTransform):
    """CSV files -> Examples by shard, dead letters and counts.

        result = pipeline | CsvToExamples(resolve_columns(paths, types, None), temp_dir=tmp, types=types)
        result.runs | runs.WriteSpilledShards(directory, file_names, write)
    """

    def __init__(self, files: Sequence[FileColumns], *, temp_dir: str, types: Dict[str, str],
                 split_key: Optional[str] = None, split_ratios=(0.8, 0.1, 0.1), num_shards: int = 1,
                 batch_size: int = csv_rows.DEFAULT_BATCH_SIZE):
        super().__init__()
        if split_key is not None and split_key not in types:
            raise options.UsageError(f"--split_key {split_key!r} is not a schema column")
        self._files = list(files)
        paths = [f.path for f in self._files]
        range_bits = runs.range_bits_for(example_bytes_estimate(paths) // num_shards)
        self._fn = CsvToExamplesFn(paths=paths, temp_dir=temp_dir, range_bits=range_bits, types=types,
                                   split_key=split_key, split_ratios=split_ratios, num_shards=num_shards,
                                   batch_size=batch_size)

    def expand(self, pbegin):
        # Files, not records, are spread over workers (by Create's own reshuffle): shuffling
        # parsed records costs more than converting them (split a big input into several
        # files for parallelism).
        result = (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "ParseAndEncode" >> beam.ParDo(self._fn).with_outputs(
                CsvToExamplesFn.DEAD_LETTER_TAG, CsvToExamplesFn.COUNTS_TAG, main="runs")
        )
        return CsvResult(result.runs, result.dead_letters, result.counts)


# A serialized Example takes about this many times its CSV line: for runs.range_bits_for
# (memory only) and for --num_shards auto, where it sets how many files there are.
_EXAMPLE_BYTES_PER_CSV_BYTE = 4


def example_bytes_estimate(paths: Sequence[str]) -> int:
    return inputs.expanded_size(paths) * _EXAMPLE_BYTES_PER_CSV_BYTE


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_input_output_args(parser)
    options.add_split_args(parser)
    parser.add_argument("--schema", default=DEFAULT_SCHEMA,
                        help="Schema .pbtxt giving each column's type (default schemas/taxi/schema.pbtxt).")
    parser.add_argument("--column_names", help="Comma-separated names for headerless files.")
    parser.add_argument("--split_key", help="Split on this column's text instead of the whole record.")
    parser.add_argument("--batch_size", type=int, default=csv_rows.DEFAULT_BATCH_SIZE,
                        help=f"Records converted together (default {csv_rows.DEFAULT_BATCH_SIZE}).")
    return options.parse(parser, argv)


def run(argv=None) -> dict:
    """Runs the job; returns the run summary (also written to DIR/run_summary.json)."""
    args, pipeline_options = parse_args(argv)
    if args.batch_size < 1:
        raise options.UsageError("--batch_size must be at least 1")
    paths = inputs.expand_patterns(options.comma_list(args.input))
    types = column_types(load_schema(args.schema))
    column_names = options.comma_list([args.column_names]) if args.column_names else None
    files = resolve_columns(paths, types, column_names)
    if args.split_key and any(args.split_key not in f.names for f in files):
        raise options.UsageError(f"--split_key {args.split_key!r} is not a column of every input file")
    owned = [f"{split}-*-of-*.tfrecord*" for split in splits.SPLIT_NAMES] + [dead_letters.DEAD_LETTER_DIR + "/*"]
    logging.info("%s: reading %d file(s), %s bytes, into %s", _JOB, len(paths),
                 f"{inputs.total_size(paths):,}", args.output_dir)
    outputs.resolve_num_shards(args, _JOB, lambda: outputs.largest_split_bytes(example_bytes_estimate(paths), args.split_ratios))
    with outputs.StagedOutput(args.output_dir, owned) as staged:
        to_examples = CsvToExamples(files, temp_dir=staged.temp_dir, types=types, split_key=args.split_key,
                                    split_ratios=args.split_ratios, num_shards=args.num_shards,
                                    batch_size=args.batch_size)
        letter_file = {0: f"{dead_letters.DEAD_LETTER_DIR}/{outputs.shard_name('dead_letter', 0, 1, '.jsonl')}"}
        FileSystems.mkdirs(staged.staged_path(dead_letters.DEAD_LETTER_DIR))
        with local_workers.pipeline(pipeline_options) as pipeline:
            result = pipeline | "CsvToExamples" >> to_examples
            _ = result.runs | "WriteExamples" >> runs.WriteSpilledShards(
                staged.staging_dir, outputs.example_files(args.num_shards, args.compression),
                lambda path, records: outputs.write_tfrecords(path, records, args.compression))
            _ = (
                result.dead_letters
                | "KeyDeadLetters" >> beam.Map(
                    lambda letter: (0, [(dead_letters.sort_key(letter), dead_letters.encode(letter))]))
                | "WriteDeadLetters" >> outputs.WriteSortedShards(staged.staging_dir, letter_file, outputs.write_lines)
            )
            _ = result.counts | "WriteCounts" >> outputs.WriteCounts(staged.staging_dir)
        summary = outputs.ingest_summary(staged.read_counts(), args)
        staged.publish(summary)
    log_summary(summary, args.output_dir)
    return summary


def log_summary(summary: dict, output_dir: str) -> None:
    logging.info("%s: read %s records: %s; %s blank. Outputs in %s", _JOB, f"{summary['read']:,}",
                 outputs.describe_ingest(summary), f"{summary['blank']:,}", output_dir)


if __name__ == "__main__":
    options.run_main(run)
