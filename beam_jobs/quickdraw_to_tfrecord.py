"""QuickDraw ndjson strokes -> rasterized tf.train.Example TFRecords, split train/eval/test.

Reads the *simplified* and the *raw* ndjson formats (detected per record, or forced with
`--format`), rasterizes every drawing to an anti-aliased `img_{N}` bitmap and writes

    DIR/{train,eval,test}-SSSSS-of-NNNNN.tfrecord[.gz]   Examples (transforms.quickdraw.features)
    DIR/labels.txt                                      class names; line index = label
    DIR/dead_letter/dead_letter-00000-of-00001.jsonl    rejected lines: file, line, reason
    DIR/samples.png                                     a contact sheet of samples per class
    DIR/run_summary.json                                counts; written last, when all is in place

Splits are a hash of `key_id`, shards are sorted: the same input and flags give the same
bytes on any runner and any number of workers.

DirectRunner (default):
    python -m beam_jobs.quickdraw_to_tfrecord --input 'data/*.ndjson' --output_dir out/qd

Two local worker processes:
    ... --direct_num_workers=2 --direct_running_mode=multi_processing

Flink (a local cluster, SDK harness in this process):
    ... --runner=FlinkRunner --flink_master=localhost:8081 --environment_type=LOOPBACK

Dataflow:
    ... --input 'gs://BUCKET/quickdraw/*.ndjson' --output_dir gs://BUCKET/qd \\
        --runner=DataflowRunner --project=PROJECT --region=REGION \\
        --temp_location=gs://BUCKET/tmp --setup_file=./setup.py
"""

import argparse
import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems

from beam_jobs import (contact_sheet, dead_letters, drawing_examples, example_bytes, inputs, local_workers, options, outputs,
                       rasterize, runs, splits, strokes)
from beam_jobs.progress import Progress
from transforms.quickdraw import features

_JOB = "quickdraw_to_tfrecord"
SAMPLES_PER_CLASS = 6
_LOGGED_REJECTIONS = 10


class _FirstPerClass:
    """The `k` smallest (key, value) pairs per class seen by one bundle (bounded memory)."""

    def __init__(self, k: int):
        self._k, self._pairs = k, {}

    def add(self, group, key: int, value) -> None:
        pairs = self._pairs.setdefault(group, [])
        pairs.append((key, value))
        if len(pairs) > 2 * self._k:
            pairs.sort(key=lambda pair: pair[0])
            del pairs[self._k:]

    def first(self) -> Dict[str, list]:
        """{class: its first `k` pairs by key}; the buffer is empty afterwards."""
        pairs, self._pairs = self._pairs, {}
        return _first_k(pairs.items(), self._k)


def _first_k(groups, k: int) -> Dict[str, list]:
    """{group: the `k` smallest (key, value) pairs} of (group, pairs) items (keys are unique)."""
    merged = {}
    for group, pairs in groups:
        merged.setdefault(group, []).extend(pairs)
    return {group: sorted(pairs, key=lambda pair: pair[0])[:k] for group, pairs in sorted(merged.items())}


class FirstPerClassFn(beam.CombineFn):
    """Bundles' {class: first pairs} -> the first `k` pairs per class over all of them.

    One combine of one element per bundle: the samples cross the shuffle once, in a few
    elements, not as one element per image through a per-key Top and a ToList."""

    def __init__(self, k: int):
        self._k = k

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, first):
        return self.merge_accumulators([accumulator, first])

    def merge_accumulators(self, accumulators):
        return _first_k((item for accumulator in accumulators for item in accumulator.items()), self._k)

    def extract_output(self, accumulator):
        return accumulator


class DrawingsToRunsFn(runs.SpillingDoFn):
    """ndjson file -> ((split, shard), run file) of (sort key, word, Example without its label).

    Encoded records are spilled to run files (runs.SpillBuffer) under the run's temp directory, and only their
    paths travel through the shuffle: a runner then moves file names, not images. The label,
    an index into the sorted list of every word written, is only known when all files are
    read: WriteExampleShardFn appends it. Rejected lines go to DEAD_LETTER_TAG and counts to
    COUNTS_TAG per batch; the words, the first samples and (with a cap) the first sort keys
    per class go to their tags once per bundle, so their volume does not grow with the input.
    """

    DEAD_LETTER_TAG = "dead_letters"
    COUNTS_TAG = "counts"
    SAMPLES_TAG = "samples"
    KEYS_TAG = "keys"
    WORDS_TAG = "words"

    def __init__(self, *, paths, temp_dir, range_bits, filters, source_format, max_points, rdp_epsilon, image_size,
                 line_width, split_ratios, num_shards, samples_per_class, keys_per_class):
        self._path_index = {path: i for i, path in enumerate(sorted(paths))}
        self._shard_keys = splits.shard_keys(num_shards)
        super().__init__(temp_dir, range_bits)
        self._filters = filters
        self._source_format, self._max_points, self._rdp_epsilon = source_format, max_points, rdp_epsilon
        self._image_size, self._line_width = image_size, line_width
        self._split_ratios, self._num_shards = split_ratios, num_shards
        self._samples_per_class, self._keys_per_class = samples_per_class, keys_per_class

    def setup(self):
        self._rejections = dead_letters.RejectionLog(_JOB, logged=_LOGGED_REJECTIONS)
        self._read = beam.metrics.Metrics.counter(_JOB, "read")
        self._progress = Progress(_JOB, "lines")

    def start_bundle(self):
        super().start_bundle()
        self._samples = _FirstPerClass(self._samples_per_class)
        self._keys = _FirstPerClass(self._keys_per_class or 1)
        self._words: Set[str] = set()

    def process(self, path: str):
        for batch in inputs.iter_line_batches(path):
            yield from self._process_batch(batch)

    def _process_batch(self, batch: inputs.LineBatch):
        counts: Dict[str, int] = {"read": len(batch.lines)}
        kept: List[Tuple[int, strokes.Drawing]] = []
        for offset, line in enumerate(batch.lines):
            if not line.strip():
                counts["blank"] = counts.get("blank", 0) + 1
                continue
            number = batch.first_line + offset
            try:
                drawing = strokes.parse_drawing(line, self._source_format, self._max_points, self._rdp_epsilon)
            except strokes.Rejected as rejected:
                letter = dead_letters.dead_letter(batch.path, number, rejected.reason, rejected.detail, line)
                self._rejections.reject(letter, counts)
                yield pvalue.TaggedOutput(self.DEAD_LETTER_TAG, letter)
                continue
            if self._filters.keep(drawing.word, drawing.recognized):
                kept.append((number, drawing))
            else:
                counts["filtered"] = counts.get("filtered", 0) + 1
        self._read.inc(len(batch.lines))
        self._progress.add(len(batch.lines))
        yield pvalue.TaggedOutput(self.COUNTS_TAG, counts)
        if kept:
            self._encode(batch.path, kept)
        if self._runs.full:
            yield from self._runs.spill()

    def finish_bundle(self):
        yield from super().finish_bundle()
        yield pvalue.TaggedOutput(self.WORDS_TAG, outputs.in_global_window(self._words))
        yield pvalue.TaggedOutput(self.SAMPLES_TAG, outputs.in_global_window(self._samples.first()))
        if self._keys_per_class:
            for word, pairs in self._keys.first().items():
                for key, _ in pairs:
                    yield pvalue.TaggedOutput(self.KEYS_TAG, outputs.in_global_window((word, key)))

    def _encode(self, path: str, kept):
        batch = drawing_examples.make_batch(kept, self._image_size, self._line_width, self._split_ratios, self._num_shards)
        encoded = example_bytes.encode_by_column(drawing_examples.to_record_batch(batch, self._image_size))
        key_lo = runs.line_orders(self._path_index[path], batch.lines)
        self._runs.add(runs.rows(batch.key_hashes, key_lo, encoded, word=pa.array(batch.words, pa.large_string())),
                       self._shard_keys, splits.shard_key_indices(batch.split, batch.shard, self._num_shards))
        self._words.update(batch.words)
        for word, key, image in zip(batch.words, runs.as_ints(batch.key_hashes, key_lo), batch.images):
            self._samples.add(word, key, image.tobytes())  # bytes cross the shuffle faster than arrays
            if self._keys_per_class:
                self._keys.add(word, key, None)


class WriteExampleShardFn(beam.DoFn):
    """Writes one TFRecord shard by merging its run files in order, labelled and capped per class.

    Side inputs: `class_list`, the sorted words (label = index), and `caps`, per word the
    largest sort key `--max_per_category` keeps (empty without a cap). Only run files whose
    paths came through the shuffle are read, so leftovers of a retried bundle never reach
    the output.
    """

    COUNTS_TAG = "counts"

    def __init__(self, directory: str, file_names: Dict[tuple, str], compression: str):
        self._directory, self._file_names, self._compression = directory, file_names, compression

    def process(self, shard_runs, class_list: List[str], caps: Dict[str, int]):
        shard_key, run_paths = shard_runs
        words = pa.array(class_list, pa.large_string())
        labels = drawing_examples.label_pieces(class_list)
        label_pieces = pa.array([labels[word] for word in class_list], pa.large_binary())
        no_cap = (1 << 128) - 1
        largest = [caps.get(word, no_cap) for word in class_list]
        cap_hi = np.array([key >> 64 for key in largest], np.uint64)
        cap_lo = np.array([key & ((1 << 64) - 1) for key in largest], np.uint64)
        filtered = 0

        def labelled(table: pa.Table) -> outputs.Suffixed:
            nonlocal filtered
            index = pc.index_in(table.column("word"), value_set=words).to_numpy()
            if caps:
                key_hi, key_lo = table.column(runs.KEY_HI).to_numpy(), table.column(runs.KEY_LO).to_numpy()
                kept = (key_hi < cap_hi[index]) | ((key_hi == cap_hi[index]) & (key_lo <= cap_lo[index]))
                filtered += len(kept) - int(kept.sum())
                table, index = table.filter(pa.array(kept)), index[kept]
            return outputs.Suffixed(table.column(runs.RECORD), label_pieces.take(index))

        written = runs.write_shard(
            outputs.join(self._directory, self._file_names[shard_key]), run_paths,
            lambda path, records: outputs.write_tfrecords(path, records, self._compression), labelled)
        yield pvalue.TaggedOutput(self.COUNTS_TAG, {"filtered": filtered, "written." + shard_key[0]: written})


# For runs.range_bits_for (memory only) and --num_shards auto (how many files): an Example
# takes about 1.5 bytes per pixel plus its strokes. Drawings are counted from the length of
# the first lines of the files (a raw drawing's line is several times a simplified one's),
# before any filter: with --categories or --max_per_category, files come out smaller.
_EXAMPLE_BYTES_PER_PIXEL, _EXAMPLE_BYTES_BESIDE_PIXELS = 1.5, 1000


def example_bytes_estimate(paths: Sequence[str], image_size: int) -> int:
    line_bytes = inputs.mean_line_bytes(sorted(paths))
    if line_bytes is None:
        return 0
    drawings = inputs.expanded_size(paths) / line_bytes
    return int(drawings * (_EXAMPLE_BYTES_PER_PIXEL * image_size ** 2 + _EXAMPLE_BYTES_BESIDE_PIXELS))


class DrawingsResult(NamedTuple):
    dead_letters: beam.PCollection  # dead letter dicts
    counts: beam.PCollection  # {name: n} dicts to sum
    class_list: beam.PCollection  # one sorted list of class names
    samples: beam.PCollection  # one {word: [(sort_key, image bytes)]}: the first drawings written per class


class DrawingsToExamples(beam.PTransform):
    """Files of ndjson drawings -> Example TFRecord shards in `directory`, plus dead letters,
    counts, the class list and sample images.

        result = pipeline | DrawingsToExamples(paths, directory=out, temp_dir=tmp, image_size=28)
        result.dead_letters | ...
    """

    def __init__(self, paths: Sequence[str], *, directory: str, temp_dir: str, num_shards: int = 1,
                 compression: str = "none", image_size: int = features.DEFAULT_IMAGE_SIZE,
                 line_width: int = 1, source_format: str = strokes.AUTO,
                 max_points: int = strokes.DEFAULT_MAX_POINTS, rdp_epsilon: float = strokes.DEFAULT_RDP_EPSILON,
                 recognized_only: bool = False, categories: Optional[Sequence[str]] = None,
                 max_per_category: Optional[int] = None, split_ratios=(0.8, 0.1, 0.1)):
        super().__init__()
        if not rasterize.MIN_SIZE <= image_size <= rasterize.MAX_SIZE:
            raise options.UsageError(f"--image_size must be in {rasterize.MIN_SIZE}..{rasterize.MAX_SIZE}, got {image_size}")
        if not 1 <= line_width <= image_size // 4:
            raise options.UsageError(f"--line_width must be in 1..{image_size // 4} at image size {image_size}")
        if source_format not in strokes.FORMATS:
            raise options.UsageError(f"--format must be one of {strokes.FORMATS}, got {source_format!r}")
        if max_points < 1:
            raise options.UsageError("--max_points must be at least 1")
        if max_per_category is not None and max_per_category < 1:
            raise options.UsageError("--max_per_category must be at least 1")
        self._paths = list(paths)
        self._categories = sorted(set(categories)) if categories else None
        self._filters = drawing_examples.Filters(recognized_only, frozenset(self._categories) if self._categories else None)
        self._max_per_category = max_per_category
        # The first drawings by sort key are kept by a cap too, so samples are always written ones.
        self._samples = min(SAMPLES_PER_CLASS, max_per_category or SAMPLES_PER_CLASS)
        self._file_names = outputs.example_files(num_shards, compression)
        range_bits = runs.range_bits_for(example_bytes_estimate(self._paths, image_size) // num_shards)
        self._to_runs = DrawingsToRunsFn(
            paths=self._paths, temp_dir=temp_dir, range_bits=range_bits, filters=self._filters, source_format=source_format, max_points=max_points,
            rdp_epsilon=rdp_epsilon, image_size=image_size, line_width=line_width, split_ratios=split_ratios,
            num_shards=num_shards, samples_per_class=self._samples, keys_per_class=max_per_category)
        self._write = WriteExampleShardFn(directory, self._file_names, compression)

    def expand(self, pbegin):
        encoded = (
            pbegin
            | "ListFiles" >> beam.Create(self._paths)  # reshuffled by Create: files spread over workers
            | "EncodeDrawings" >> beam.ParDo(self._to_runs).with_outputs(
                DrawingsToRunsFn.DEAD_LETTER_TAG, DrawingsToRunsFn.COUNTS_TAG, DrawingsToRunsFn.SAMPLES_TAG,
                DrawingsToRunsFn.KEYS_TAG, DrawingsToRunsFn.WORDS_TAG, main="runs")
        )
        if self._categories is not None:
            class_list = pbegin | "GivenClasses" >> beam.Create([self._categories])
        else:
            class_list = (
                encoded.words
                | "AllWords" >> beam.CombineGlobally(lambda sets: set().union(*sets))
                | "SortWords" >> beam.Map(sorted)
            )
        if self._max_per_category is not None:
            caps = (
                encoded.keys
                | "FirstPerClass" >> beam.combiners.Top.SmallestPerKey(self._max_per_category)
                | "LastKeptKey" >> beam.MapTuple(lambda word, keys: (word, keys[-1]))
            )
        else:
            caps = pbegin | "NoCaps" >> beam.Create([])
        written = (
            encoded.runs
            | "GroupByShard" >> outputs.GroupByShard(self._file_names)
            | "WriteExamples" >> beam.ParDo(self._write, class_list=pvalue.AsSingleton(class_list),
                                            caps=pvalue.AsDict(caps)).with_outputs(
                WriteExampleShardFn.COUNTS_TAG, main="files")
        )
        samples = encoded.samples | "SamplesPerClass" >> beam.CombineGlobally(FirstPerClassFn(self._samples))
        counts = (encoded.counts, written.counts) | "AllCounts" >> beam.Flatten()
        return DrawingsResult(encoded.dead_letters, counts, class_list, samples)


def _write_labels(class_list: List[str], path: str) -> None:
    with FileSystems.create(path) as handle:
        handle.write("".join(word + "\n" for word in class_list).encode())


def _write_contact_sheet(samples: Dict[str, list], path: str, image_size: int) -> None:
    images = {word: [np.frombuffer(image, np.uint8).reshape(image_size, image_size) for _, image in pairs]
              for word, pairs in samples.items()}
    with FileSystems.create(path) as handle:
        handle.write(contact_sheet.contact_sheet(images, SAMPLES_PER_CLASS))


def read_categories(value: Optional[str]) -> Optional[List[str]]:
    """`--categories`: a comma-separated list, or the path of a file with one name per line."""
    if not value:
        return None
    if FileSystems.exists(value):
        with FileSystems.open(value) as handle:
            names = [line.strip() for line in handle.read().decode("utf-8").splitlines()]
    else:
        names = [name.strip() for name in value.split(",")]
    names = [name for name in names if name]
    if not names:
        raise options.UsageError(f"--categories {value!r} names no category")
    return names


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_input_output_args(parser)
    options.add_split_args(parser)
    parser.add_argument("--format", dest="source_format", choices=strokes.FORMATS, default=strokes.AUTO,
                        help="ndjson format; auto detects it per record (default).")
    parser.add_argument("--image_size", type=int, default=features.DEFAULT_IMAGE_SIZE,
                        help="Bitmap side in pixels, 8..512 (default 64; feature img_{N}).")
    parser.add_argument("--line_width", type=int, default=1, help="Stroke width in pixels (default 1).")
    parser.add_argument("--max_points", type=int, default=strokes.DEFAULT_MAX_POINTS,
                        help="Reject drawings with more points than this (default 20000).")
    parser.add_argument("--rdp_epsilon", type=float, default=strokes.DEFAULT_RDP_EPSILON,
                        help="Ramer-Douglas-Peucker epsilon for raw strokes; 0 turns it off (default 2.0).")
    parser.add_argument("--recognized_only", action="store_true", help="Keep only recognized drawings.")
    parser.add_argument("--categories", help="Keep only these words: comma-separated, or a file of names.")
    parser.add_argument("--max_per_category", type=int,
                        help="Keep at most N drawings per word (those with the smallest key_id hash).")
    return options.parse(parser, argv)


def run(argv=None) -> dict:
    """Runs the job; returns the run summary (also written to DIR/run_summary.json)."""
    args, pipeline_options = parse_args(argv)
    paths = inputs.expand_patterns(options.comma_list(args.input))
    categories = read_categories(args.categories)
    owned = [f"{split}-*-of-*.tfrecord*" for split in splits.SPLIT_NAMES] + [
        features.LABELS_FILE, "samples.png", dead_letters.DEAD_LETTER_DIR + "/*"]
    logging.info("%s: reading %d file(s), %s bytes, into %s", _JOB, len(paths),
                 f"{inputs.total_size(paths):,}", args.output_dir)
    outputs.resolve_num_shards(args, _JOB, lambda: outputs.largest_split_bytes(
        example_bytes_estimate(paths, args.image_size), args.split_ratios))
    with outputs.StagedOutput(args.output_dir, owned) as staged:
        to_examples = DrawingsToExamples(
            paths, directory=staged.staging_dir, temp_dir=staged.temp_dir, num_shards=args.num_shards, compression=args.compression,
            image_size=args.image_size, line_width=args.line_width, source_format=args.source_format,
            max_points=args.max_points, rdp_epsilon=args.rdp_epsilon, recognized_only=args.recognized_only,
            categories=categories, max_per_category=args.max_per_category, split_ratios=args.split_ratios)
        letter_file = {0: f"{dead_letters.DEAD_LETTER_DIR}/{outputs.shard_name('dead_letter', 0, 1, '.jsonl')}"}
        FileSystems.mkdirs(staged.staged_path(dead_letters.DEAD_LETTER_DIR))
        with local_workers.pipeline(pipeline_options) as pipeline:
            result = pipeline | "DrawingsToExamples" >> to_examples
            _ = (
                result.dead_letters
                | "KeyDeadLetters" >> beam.Map(lambda letter: (0, [(dead_letters.sort_key(letter), dead_letters.encode(letter))]))
                | "WriteDeadLetters" >> outputs.WriteSortedShards(staged.staging_dir, letter_file, outputs.write_lines)
            )
            _ = result.counts | "WriteCounts" >> outputs.WriteCounts(staged.staging_dir)
            _ = result.class_list | "WriteLabels" >> beam.Map(
                _write_labels, staged.staged_path(features.LABELS_FILE))
            _ = result.samples | "WriteContactSheet" >> beam.Map(
                _write_contact_sheet, staged.staged_path("samples.png"), args.image_size)
        counts = staged.read_counts()
        with FileSystems.open(staged.staged_path(features.LABELS_FILE)) as handle:
            classes = len(handle.read().splitlines())
        summary = outputs.ingest_summary(counts, args, filtered=True, classes=classes)
        staged.publish(summary)
    log_summary(summary, args.output_dir)
    return summary


def log_summary(summary: dict, output_dir: str) -> None:
    logging.info("%s: read %s lines: %s; %s classes; %s filtered; %s blank. Outputs in %s", _JOB,
                 f"{summary['read']:,}", outputs.describe_ingest(summary), summary["classes"],
                 f"{summary['filtered']:,}", f"{summary['blank']:,}", output_dir)


if __name__ == "__main__":
    options.run_main(run)
