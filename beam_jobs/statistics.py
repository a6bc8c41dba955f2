"""TFDV statistics over CSV files or the Example TFRecords of an ingest job, one list per split.

Reads either CSV files (`--input`, any number, same header) or an ingest job's output
(`--examples_dir DIR` holding DIR/{train,eval,test}-SSSSS-of-NNNNN.tfrecord[.gz]), runs
`tfdv.GenerateStatistics` in this job's own pipeline and writes

    OUT/<split>/statistics.pb          DatasetFeatureStatisticsList (binary; tfdv.load_stats_binary)
    OUT/<split>/statistics.pbtxt       the same as text, when under 2 MB
    OUT/dead_letter/dead_letter-00000-of-00001.jsonl   CSV rows that could not be parsed
    OUT/run_summary.json               counts and column types; written last

`<split>` is train/eval/test for `--examples_dir` and `all` for `--input`. With `--schema`
the schema guides the statistics (types, categorical ints, domains); `--slice_by FEATURE`
adds one dataset per value of FEATURE; `--report report.html` writes a self-contained page.

DirectRunner (default):
    python -m beam_jobs.statistics --input data/taxi/data.csv --output_dir out/stats \\
        --report out/stats/report.html
    python -m beam_jobs.statistics --examples_dir out/qd --output_dir out/qd_stats

Two local worker processes:
    ... --direct_num_workers=2 --direct_running_mode=multi_processing

Flink (a local cluster, SDK harness in this process):
    ... --runner=FlinkRunner --flink_master=localhost:8081 --environment_type=LOOPBACK

Dataflow:
    ... --input 'gs://BUCKET/taxi/*.csv' --output_dir gs://BUCKET/stats \\
        --runner=DataflowRunner --project=PROJECT --region=REGION \\
        --temp_location=gs://BUCKET/tmp --setup_file=./setup.py
"""

import argparse
import contextlib
import json
import logging
from typing import Dict, Iterator, List, NamedTuple, Optional

import apache_beam as beam
import tensorflow_data_validation as tfdv
from apache_beam.io.filesystems import FileSystems
from tensorflow_metadata.proto.v0 import schema_pb2

from beam_jobs import csv_batches, dead_letters, inputs, line_ranges, local_workers, options, outputs, report, splits, stats_io

_JOB = "statistics"
# Rows per RecordBatch given to TFDV, by input kind: TFDV pays per batch (and on a cluster per
# accumulator: its combine spreads batches over 128 keys), so CSV's narrow rows come in big batches, fewer
# for a CSV so wide that a batch would hold more than _CSV_CELLS_PER_BATCH cells; Examples may
# be wide (a QuickDraw image is 4,096 values), so theirs stay smaller.
DEFAULT_BATCH_SIZES = {"csv": 32768, "tfrecord": 4096}
_CSV_CELLS_PER_BATCH = 1 << 22
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz", ".tfrecords", ".tfrecords.gz")
_KINDS_FILE = "_column_kinds.json"
# The transforms that read the input: with forked local workers, the stages that hold them
# run on the workers and TFDV's many small stages after them in the launcher.
BULK_TRANSFORMS = ("InputsToStatistics/CsvToRecordBatches[", "InputsToStatistics/ReadExamples[")


class Source(NamedTuple):
    """What to read: `kind` is csv or tfrecord; `splits` maps a split name to its files."""

    kind: str
    splits: Dict[str, List[str]]
    column_names: Optional[List[str]] = None


def resolve_source(input_patterns: Optional[List[str]], examples_dir: Optional[str],
                   input_format: str = "auto") -> Source:
    """Expands the input flags at launch, failing fast with a message the user can act on."""
    if bool(input_patterns) == bool(examples_dir):
        raise options.UsageError("give exactly one of --input PATTERN or --examples_dir DIR")
    if examples_dir:
        found = {}
        for split in splits.SPLIT_NAMES:
            pattern = FileSystems.join(examples_dir, f"{split}-*-of-*.tfrecord*")
            files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
            if files:
                found[split] = files
        if not found:
            raise options.UsageError(
                f"--examples_dir {examples_dir!r} holds no {{train,eval,test}}-*-of-*.tfrecord[.gz] files")
        return Source("tfrecord", found)
    paths = inputs.expand_patterns(input_patterns)
    kind = input_format
    if kind == "auto":
        tfrecords = [p.endswith(_TFRECORD_SUFFIXES) for p in paths]
        if any(tfrecords) and not all(tfrecords):
            raise options.UsageError("--input mixes TFRecord and other files; pass --input_format")
        kind = "tfrecord" if all(tfrecords) else "csv"
    if kind == "csv":
        return Source("csv", {stats_io.ALL_SPLIT: paths}, csv_batches.common_header(paths))
    return Source("tfrecord", {stats_io.ALL_SPLIT: paths})


def batch_size_for(source: Source, requested: Optional[int]) -> int:
    """The --batch_size given, or the default for the kind of input (DEFAULT_BATCH_SIZES)."""
    if requested is None:
        if source.kind == "csv" and source.column_names:
            return max(1, min(DEFAULT_BATCH_SIZES["csv"], _CSV_CELLS_PER_BATCH // len(source.column_names)))
        return DEFAULT_BATCH_SIZES[source.kind]
    if requested < 1:
        raise options.UsageError("--batch_size must be at least 1")
    return requested


def stats_options(schema: Optional[schema_pb2.Schema], slice_by: Optional[str]) -> tfdv.StatsOptions:
    """TFDV's defaults, guided by the schema; built per call (a shared default would be mutated)."""
    slicers = [tfdv.experimental_get_feature_value_slicer({slice_by: None})] if slice_by else None
    return tfdv.StatsOptions(schema=schema, experimental_slice_functions=slicers)


def _count_rows(record_batch, split: str) -> dict:
    return {f"rows.{split}": record_batch.num_rows}


class StatisticsResult(NamedTuple):
    statistics: Dict[str, beam.PCollection]  # split -> one DatasetFeatureStatisticsList
    dead_letters: beam.PCollection  # dead letter dicts (CSV rows that did not parse)
    counts: beam.PCollection  # {name: n} dicts to sum
    kinds: Optional[beam.PCollection]  # CSV only: {column: KindEvidence}


class InputsToStatistics(beam.PTransform):
    """Pipeline begin -> statistics per split of a Source.

        result = pipeline | InputsToStatistics(source=source, schema=schema)
        result.statistics["all"] | beam.Map(stats_io.write_binary, path)
    """

    def __init__(self, *, source: Source, schema: Optional[schema_pb2.Schema] = None,
                 slice_by: Optional[str] = None, batch_size: Optional[int] = None):
        super().__init__()
        batch_size = batch_size_for(source, batch_size)
        if slice_by and schema is not None and not any(f.name == slice_by for f in schema.feature):
            raise options.UsageError(f"--slice_by {slice_by!r} is not a feature of the schema")
        if slice_by and source.column_names is not None and slice_by not in source.column_names:
            raise options.UsageError(f"--slice_by {slice_by!r} is not a CSV column ({source.column_names})")
        self._source, self._schema, self._slice_by, self._batch_size = source, schema, slice_by, batch_size

    def expand(self, pbegin):
        from tfx_bsl.public import tfxio

        pipeline = pbegin.pipeline
        statistics, counts, letters, kinds = {}, [], [], None
        for split, paths in sorted(self._source.splits.items()):
            if self._source.kind == "csv":
                parsed = (
                    pipeline
                    | f"PlanRanges[{split}]" >> beam.Create(line_ranges.plan(paths))  # reshuffled by Create
                    | f"CsvToRecordBatches[{split}]" >> csv_batches.CsvToRecordBatches(
                        column_names=self._source.column_names, schema=self._schema, job=_JOB,
                        batch_size=self._batch_size)
                )
                batches, kinds = parsed.record_batches, parsed.kinds
                letters.append(parsed.dead_letters)
                counts.append(parsed.counts)  # the first pass counts the rows it found ("rows")
            else:
                batches = pipeline | f"ReadExamples[{split}]" >> tfxio.TFExampleRecord(
                    file_pattern=paths, telemetry_descriptors=[_JOB]).BeamSource(self._batch_size)
                counts.append(batches | f"CountRows[{split}]" >> beam.Map(_count_rows, split))
            with without_hot_key_fanout(local_workers.is_local_runner(pipeline.runner)):
                statistics[split] = batches | f"GenerateStatistics[{split}]" >> tfdv.GenerateStatistics(
                    stats_options(self._schema, self._slice_by))
        if not letters:
            letters = [pipeline | "NoDeadLetters" >> beam.Create([])]
        return StatisticsResult(
            statistics,
            tuple(letters) | "AllDeadLetters" >> beam.Flatten(),
            tuple(counts) | "AllCounts" >> beam.Flatten(),
            kinds,
        )


@contextlib.contextmanager
def without_hot_key_fanout(local: bool) -> Iterator[None]:
    """TFDV combines each slice's statistics with a hot-key fanout of 128: on a cluster, the
    merge of that one big key is spread over workers. On the local runner (one or two
    workers) the fanout only splits each bundle's statistics into one partial per batch,
    each flushed, sent and merged at the end on one core. While TFDV builds its transform
    for a local run, no fanout is added (as Beam's `with_hot_key_fanout(None)`): Beam's
    method is replaced for the whole process meanwhile, so no other thread may build a
    pipeline then. A run on another runner keeps TFDV's fanout."""
    if not local:
        yield
        return
    beams = beam.CombinePerKey.__dict__["with_hot_key_fanout"]
    beam.CombinePerKey.with_hot_key_fanout = _without_fanout
    try:
        yield
    finally:
        beam.CombinePerKey.with_hot_key_fanout = beams


def _without_fanout(combine: beam.CombinePerKey, fanout) -> beam.CombinePerKey:
    return combine


def _write_kinds(found: dict, path: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write(json.dumps({name: list(evidence) for name, evidence in found.items()},
                                sort_keys=True).encode())


def _read_kinds(staged: outputs.StagedOutput) -> Dict[str, csv_batches.KindEvidence]:
    path = staged.staged_path(_KINDS_FILE)
    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as handle:
        found = {name: csv_batches.KindEvidence(*value) for name, value in json.loads(handle.read()).items()}
    FileSystems.delete([path])
    return found


def owned_globs(source: Source) -> List[str]:
    """The files of a previous run that a new run over `source` replaces."""
    return [f"{split}/{name}" for split in sorted(source.splits)
            for name in (stats_io.STATS_FILE, stats_io.STATS_TEXT_FILE)] + [dead_letters.DEAD_LETTER_DIR + "/*"]


def compute(source: Source, schema: Optional[schema_pb2.Schema], slice_by: Optional[str], batch_size: Optional[int],
            pipeline_options, staged: outputs.StagedOutput) -> Dict:
    """Runs the statistics pipeline into the staging directory; returns statistics and counts.

    Returns {"statistics": {split: DatasetFeatureStatisticsList}, "summary": {...}}.
    """
    letter_file = {0: f"{dead_letters.DEAD_LETTER_DIR}/{outputs.shard_name('dead_letter', 0, 1, '.jsonl')}"}
    FileSystems.mkdirs(staged.staged_path(dead_letters.DEAD_LETTER_DIR))
    for split in source.splits:
        FileSystems.mkdirs(staged.staged_path(split))
    with local_workers.pipeline(pipeline_options, bulk=BULK_TRANSFORMS) as pipeline:
        result = pipeline | "InputsToStatistics" >> InputsToStatistics(
            source=source, schema=schema, slice_by=slice_by, batch_size=batch_size)
        for split, stats in result.statistics.items():
            _ = stats | f"WriteStatistics[{split}]" >> beam.Map(
                stats_io.write_binary, stats_io.stats_path(staged.staging_dir, split))
        _ = (
            result.dead_letters
            | "KeyDeadLetters" >> beam.Map(lambda letter: (0, [(dead_letters.sort_key(letter), dead_letters.encode(letter))]))
            | "WriteDeadLetters" >> outputs.WriteSortedShards(staged.staging_dir, letter_file, outputs.write_lines)
        )
        _ = result.counts | "WriteCounts" >> outputs.WriteCounts(staged.staging_dir)
        if result.kinds is not None:
            _ = result.kinds | "WriteColumnKinds" >> beam.Map(_write_kinds, staged.staged_path(_KINDS_FILE))
    counts = staged.read_counts()
    found = _read_kinds(staged)
    widened = csv_batches.log_widened(found, schema)
    statistics = {}
    for split in sorted(source.splits):
        path = stats_io.stats_path(staged.staging_dir, split)
        statistics[split], _ = stats_io.load_statistics(path)
        if FileSystems.match([path])[0].metadata_list[0].size_in_bytes <= stats_io.TEXT_LIMIT_BYTES:
            stats_io.write_text(FileSystems.join(staged.staging_dir, split, stats_io.STATS_TEXT_FILE),
                                statistics[split])
    summary = build_summary(source, schema, counts, statistics, found, widened)
    return {"statistics": statistics, "summary": summary}


def build_summary(source: Source, schema, counts: Dict[str, int], statistics: Dict, found: Dict,
                  widened: List[str]) -> dict:
    # CSV input is one split, whose rows the first pass counted: TFDV, fed by the second pass,
    # must count as many (the two passes agree). Examples are counted per split as read.
    rows = ({split: counts.get("rows", 0) for split in source.splits} if source.kind == "csv" else
            {split: counts.get(f"rows.{split}", 0) for split in sorted(source.splits)})
    for split, stats in statistics.items():
        counted = stats_io.default_split(stats).datasets[0].num_examples if stats.datasets else 0
        if counted != rows[split]:
            raise RuntimeError(f"split {split}: TFDV counted {counted} examples but {rows[split]} rows were read")
    summary = {"input_kind": source.kind, "files": {s: len(p) for s, p in sorted(source.splits.items())},
               "examples": rows}
    if source.kind == "csv":
        rejected = dict(sorted((k.split(".", 1)[1], v) for k, v in counts.items() if k.startswith("rejected.")))
        summary.update(
            lines_read=counts.get("read", 0), header_lines=counts.get("header", 0),
            blank_lines=counts.get("blank", 0), rejected=rejected,
            column_types={name: csv_batches.KIND_NAMES.get(kind, "NULL") for name, kind in sorted(
                csv_batches.column_kinds(found, source.column_names, csv_batches.schema_kinds(schema)).items())},
            type_warnings=widened)
        # Every line the first pass read is a header, blank, rejected or a row.
        accounted = summary["header_lines"] + summary["blank_lines"] + sum(rejected.values()) + sum(rows.values())
        if accounted != summary["lines_read"]:
            raise RuntimeError(f"counts do not reconcile: read {summary['lines_read']} lines but "
                               f"accounted {accounted}: {counts}")
    return summary


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Input flags shared with `validate`."""
    parser.add_argument("--input", action="append",
                        help="CSV (or TFRecord) file pattern; repeatable or comma-separated; globs and .gz work.")
    parser.add_argument("--examples_dir", help="An ingest job's output: DIR/{train,eval,test}-*.tfrecord[.gz].")
    parser.add_argument("--input_format", choices=("auto", "csv", "tfrecord"), default="auto",
                        help="Format of --input files (default: TFRecord by extension, else CSV).")
    parser.add_argument("--schema", help="Schema .pbtxt that guides the statistics (types, domains).")
    parser.add_argument("--output_dir", required=True, help="Directory for all outputs.")
    parser.add_argument("--report", help="Also write a self-contained HTML report to this path.")
    parser.add_argument("--batch_size", type=int,
                        help=f"Rows per Arrow batch given to TFDV (default {DEFAULT_BATCH_SIZES['csv']:,} for CSV, "
                             f"fewer for a very wide one; {DEFAULT_BATCH_SIZES['tfrecord']:,} for Examples).")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_args(parser)
    parser.add_argument("--slice_by", help="Also compute statistics per value of this feature.")
    return options.parse(parser, argv)


def load_source_and_schema(args):
    """The input and schema the flags name; `args.batch_size` is resolved for the input, so
    the run summary records the size used."""
    source = resolve_source(options.comma_list(args.input), args.examples_dir, args.input_format)
    schema = stats_io.load_schema(args.schema) if args.schema else None
    args.batch_size = batch_size_for(source, args.batch_size)
    return source, schema


def run(argv=None) -> dict:
    """Runs the job; returns the run summary (also written to OUT/run_summary.json)."""
    args, pipeline_options = parse_args(argv)
    source, schema = load_source_and_schema(args)
    logging.info("%s: %s input, splits %s, into %s", _JOB, source.kind,
                 {s: len(p) for s, p in sorted(source.splits.items())}, args.output_dir)
    with outputs.StagedOutput(args.output_dir, owned_globs(source)) as staged:
        computed = compute(source, schema, args.slice_by, args.batch_size, pipeline_options, staged)
        summary = dict(computed["summary"], options=recorded_options(args))
        staged.publish(summary)
    if args.report:
        report.write_report(args.report, report.ReportInput(
            title=f"Statistics: {', '.join(options.comma_list(args.input)) or args.examples_dir}",
            statistics=computed["statistics"], examples_dir=args.examples_dir))
        logging.info("%s: report written to %s", _JOB, args.report)
    logging.info("%s: %s examples per split %s; outputs in %s", _JOB, source.kind, summary["examples"],
                 args.output_dir)
    return summary


def recorded_options(args) -> dict:
    return dict(sorted(vars(args).items()))


if __name__ == "__main__":
    options.run_main(run)
