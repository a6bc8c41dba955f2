"""Deterministic, atomic job outputs.

Records are written into a hidden staging directory inside the output directory, each shard
sorted by a stable key so the same input gives the same bytes on any runner and any number
of workers. Only when the pipeline succeeds are the files moved into place, and
`run_summary.json` is written last: a directory without it is not a complete output.
"""

import collections
import json
import logging
import math
import os
import posixpath
import socket
import time
import uuid
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_jobs import example_bytes
from beam_jobs.splits import SPLIT_NAMES, shard_keys

RUN_SUMMARY = "run_summary.json"
COUNTS_FILE = "_counts.json"
_STARTED = "_started.json"  # in the staging directory: who is writing there, since when


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def shard_name(prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def tfrecord_suffix(compression: str) -> str:
    return ".tfrecord.gz" if compression == "gzip" else ".tfrecord"


def example_files(num_shards: int, compression: str) -> Dict[tuple, str]:
    """(split, shard) -> the name of its Example TFRecord file."""
    suffix = tfrecord_suffix(compression)
    return {(split, shard): shard_name(split, shard, num_shards, suffix) for split, shard in shard_keys(num_shards)}


# `--num_shards auto`: files of about this many bytes in the largest split. TensorFlow's data
# guide asks for files of 10+ MB, ideally 100+ MB; more files let a runner write them, and
# tf.data read them, in parallel (one file is written by one worker).
SHARD_BYTES = 128 << 20


def auto_num_shards(largest_split_bytes: int) -> int:
    """Files per split for `--num_shards auto`, given the expected bytes of the largest split."""
    return max(1, math.ceil(largest_split_bytes / SHARD_BYTES))


def largest_split_bytes(example_bytes: int, split_ratios: Sequence[float]) -> int:
    """Expected bytes of the largest split when `example_bytes` are split by `split_ratios`
    (fractions, as splits.parse_ratios gives them)."""
    return int(example_bytes * max(split_ratios))


def resolve_num_shards(args, job: str, estimate_largest_split: Callable[[], int]) -> int:
    """`args.num_shards`, or for `auto` (None) auto_num_shards of the expected bytes of the
    largest split, stored back into `args` so the run summary records it. An estimate from the
    input files' sizes: the same input and flags give the same count on any runner."""
    if args.num_shards is None:
        expected = estimate_largest_split()
        args.num_shards = auto_num_shards(expected)
        logging.info("%s: --num_shards auto: %d file(s) per split (about %s bytes expected in the largest split)",
                     job, args.num_shards, f"{expected:,}")
    return args.num_shards


def _masked_crc32c(crcs: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC32C of CRC32C values, as little-endian uint32 bytes."""
    crcs = crcs.astype(np.uint64)
    return ((((crcs >> np.uint64(15)) | (crcs << np.uint64(17))) + np.uint64(0xA282EAD8))
            & np.uint64(0xFFFFFFFF)).astype("<u4")


class Suffixed(NamedTuple):
    """Records each written with its suffix appended (QuickDraw's label): framed in one pass,
    not joined first, which would copy every record once more."""

    records: pa.Array
    suffixes: pa.Array


def tfrecord_frames(records: pa.Array, suffixes: Optional[pa.Array] = None) -> pa.Buffer:
    """The TFRecord framing of `records` (binary; each followed by its suffix, if given), back to
    back: per record its length, the masked CRC32C of the length, the record, the masked
    CRC32C of the record."""
    records = records.cast(pa.large_binary())
    if records.null_count:
        raise ValueError(f"{records.null_count} of {len(records)} records are null: a TFRecord holds bytes")
    count = len(records)
    if not count:
        return pa.py_buffer(b"")
    offsets = example_bytes.binary_offsets(records)
    lengths = np.diff(offsets)
    # A read-only numpy view: google_crc32c takes slices of it without copying each record.
    flat = example_bytes.binary_values(records)
    views = (flat[begin:end] for begin, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()))
    pieces = [records]
    if suffixes is None:
        crcs = (google_crc32c.value(view) for view in views)
    else:
        suffixes = suffixes.cast(pa.large_binary())
        endings = suffixes.to_pylist()
        lengths = lengths + np.array([len(ending) for ending in endings], np.int64)
        crcs = (google_crc32c.extend(google_crc32c.value(view), ending) for view, ending in zip(views, endings))
        pieces.append(suffixes)
    record_crcs = _masked_crc32c(np.fromiter(crcs, np.uint64, count))
    distinct, which = np.unique(lengths, return_inverse=True)
    length_bytes = distinct.astype("<u8")
    length_crcs = _masked_crc32c(np.array([google_crc32c.value(b.tobytes()) for b in length_bytes], np.uint64))
    headers = np.empty((count, 12), np.uint8)
    headers[:, :8] = length_bytes.view(np.uint8).reshape(-1, 8)[which]
    headers[:, 8:] = length_crcs.view(np.uint8).reshape(-1, 4)[which]
    trailers = record_crcs.view(np.uint8).reshape(-1, 4)
    if records.nbytes >= LONG_RECORD_BYTES * count:
        return pa.py_buffer(_framed_long(headers, pieces, trailers))
    framed = pc.binary_join_element_wise(
        example_bytes.fixed_width_binary(headers), *pieces, example_bytes.fixed_width_binary(trailers),
        pa.scalar(b"", pa.large_binary()))
    return framed.buffers()[2].slice(0, int(example_bytes.binary_offsets(framed)[count]))


# Records longer than this on average are copied one slice each (example_bytes.place_values)
# into an output allocated once: Arrow's kernels (take, binary_join_element_wise) grow their
# output as they go, which costs 2-3x more for QuickDraw's 6 KB Examples; for short records
# their per-row speed wins.
LONG_RECORD_BYTES = 1024


def _framed_long(headers: np.ndarray, pieces: List[pa.Array], trailers: np.ndarray) -> np.ndarray:
    """Row by row: its header, its piece of each array in `pieces`, its trailer, as one buffer."""
    lengths = [np.diff(example_bytes.binary_offsets(piece)) for piece in pieces]
    starts = example_bytes.offsets_of(headers.shape[1] + trailers.shape[1] + sum(lengths))
    out = np.empty(int(starts[-1]), np.uint8)
    out[(starts[:-1, None] + np.arange(headers.shape[1])).reshape(-1)] = headers.reshape(-1)
    position = starts[:-1] + headers.shape[1]
    for piece, piece_lengths in zip(pieces, lengths):
        example_bytes.place_values(out, position, piece)
        position = position + piece_lengths
    out[(position[:, None] + np.arange(trailers.shape[1])).reshape(-1)] = trailers.reshape(-1)
    return out


def write_tfrecords(path: str, record_arrays: Iterable, compression: str) -> None:
    """Writes a TFRecord file of the records of `record_arrays` (binary arrays, or Suffixed), in
    order; gzip-compressed as a whole with --compression gzip.

    The framing is written here rather than by tf.io.TFRecordWriter so that worker processes
    never import TensorFlow (seconds of start-up each) and a batch is framed at once; tf.data
    reads the files and checks every CRC in the tests.
    """
    compression_type = CompressionTypes.GZIP if compression == "gzip" else CompressionTypes.UNCOMPRESSED
    with FileSystems.create(path, compression_type=compression_type) as handle:
        for records in record_arrays:
            handle.write(tfrecord_frames(*records) if isinstance(records, Suffixed) else tfrecord_frames(records))


def write_lines(path: str, records: Iterable[bytes]) -> None:
    with FileSystems.create(path) as handle:
        for record in records:
            handle.write(record + b"\n")


def _write_shard(keyed_batches, directory: str, file_names: Dict, write: Callable) -> Tuple:
    key, batches = keyed_batches
    rows = sorted(row for batch in batches for row in batch)
    write(join(directory, file_names[key]), (record for _, record in rows))
    return key, len(rows)


class GroupByShard(beam.PTransform):
    """Groups `(key, value)` pairs by output file key, with every key of `keys` present.

    Keys that received nothing still come out (with no values), so empty shards are
    written too and the output layout does not depend on the data.
    """

    def __init__(self, keys):
        super().__init__()
        self._keys = sorted(keys)

    def expand(self, keyed):
        every_key = keyed.pipeline | "EveryShard" >> beam.Create([(key, []) for key in self._keys])
        flattened = (keyed, every_key) | "WithEmptyShards" >> beam.Flatten()
        return (
            flattened
            | "GroupByShard" >> beam.GroupByKey()
            | "DropEmptyMarkers" >> beam.MapTuple(lambda key, values: (key, [v for v in values if not _is_marker(v)]))
        )


def _is_marker(value) -> bool:
    return isinstance(value, list) and not value


class WriteSortedShards(beam.PTransform):
    """Writes `(key, [(sort_key, bytes), ...])` batches to one file per key, sorted by sort_key.

    `file_names` maps every key to its file name, so empty shards are written too. The
    output PCollection holds `(key, record_count)` per file.
    """

    _write_group = staticmethod(_write_shard)

    def __init__(self, directory: str, file_names: Dict, write: Callable):
        super().__init__()
        self._directory, self._file_names, self._write = directory, dict(file_names), write

    def expand(self, keyed):
        return (
            keyed
            | "GroupByShard" >> GroupByShard(self._file_names)
            | "WriteShard" >> beam.Map(self._write_group, self._directory, self._file_names, self._write)
        )


def in_global_window(value) -> WindowedValue:
    """An element for finish_bundle to emit (it must name the element's window)."""
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


def ingest_summary(counts: Dict[str, int], args, filtered: bool = False, **extra) -> dict:
    """run_summary.json of an ingest job; refuses counts that do not reconcile.

    `read == blank + filtered + sum(written) + sum(rejected)` (`filtered` only for jobs that filter).
    """
    summary = {
        "read": counts.get("read", 0),
        "blank": counts.get("blank", 0),
        "written": {split: counts.get("written." + split, 0) for split in SPLIT_NAMES},
        "rejected": dict(sorted((k.split(".", 1)[1], v) for k, v in counts.items() if k.startswith("rejected."))),
    }
    if filtered:
        summary["filtered"] = counts.get("filtered", 0)
    summary.update(extra, options=dict(sorted(vars(args).items())))
    accounted = (summary["blank"] + summary.get("filtered", 0) + sum(summary["written"].values())
                 + sum(summary["rejected"].values()))
    if accounted != summary["read"]:
        raise RuntimeError(f"counts do not reconcile: read {summary['read']} but accounted {accounted}: {counts}")
    return summary


def describe_ingest(summary: dict) -> str:
    """`wrote N examples (train a, eval b, test c); R rejected (reason n, ...)` for the final log line."""
    written, rejected = summary["written"], summary["rejected"]
    reasons = f" ({', '.join(f'{k} {v}' for k, v in rejected.items())})" if rejected else ""
    return (f"wrote {sum(written.values()):,} examples (train {written['train']:,}, eval {written['eval']:,}, "
            f"test {written['test']:,}); {sum(rejected.values()):,} rejected{reasons}")


def merge_counts(counts: Iterable[Dict[str, int]]) -> Dict[str, int]:
    total = collections.Counter()
    for count in counts:
        total.update(count)
    return dict(total)


class WriteCounts(beam.PTransform):
    """Sums `{name: n}` dicts into one JSON file the launcher reads for run_summary.json."""

    def __init__(self, directory: str):
        super().__init__()
        self._path = join(directory, COUNTS_FILE)

    def expand(self, counts):
        def write(total):
            with FileSystems.create(self._path) as handle:
                handle.write(json.dumps(total, sort_keys=True).encode())

        # Without a default for no input (and the stage that adds it): no counts, no file, and
        # read_counts gives {} for that.
        return counts | "SumCounts" >> beam.CombineGlobally(merge_counts).without_defaults() | "WriteCounts" >> beam.Map(write)


def _exists(path: str) -> bool:
    return FileSystems.exists(path)


def _list_files(directory: str) -> List[str]:
    """Every file under `directory` (on an object store: every object under the prefix)."""
    return sorted(m.path for m in FileSystems.match([join(directory, "**")])[0].metadata_list)


def _delete_tree(directory: str) -> None:
    """Removes a local directory with its contents, or an object store prefix's objects (an
    object store has no directories: `exists` is false for a prefix)."""
    if _exists(directory):
        FileSystems.delete([directory])
        return
    files = _list_files(directory)
    if files:
        FileSystems.delete(files)


class StagedOutput:
    """Context manager: stage into `DIR/.incomplete-<id>/`, publish on success, clean up on failure.

    `owned_globs` name the previous run's files (relative to DIR) that a new run replaces;
    nothing else in DIR is touched.
    """

    def __init__(self, output_dir: str, owned_globs: Sequence[str]):
        self.output_dir = output_dir.rstrip("/") or "/"
        self.staging_dir = join(self.output_dir, f".incomplete-{uuid.uuid4().hex[:12]}")
        # Scratch space for the run (spilled shuffle parts, TFT's temp files): never published.
        self.temp_dir = join(self.staging_dir, "_tmp")
        self._owned_globs = list(owned_globs)
        self.started = time.time()

    def __enter__(self):
        self._warn_about_leftovers()
        FileSystems.mkdirs(self.staging_dir)
        FileSystems.mkdirs(self.temp_dir)
        with FileSystems.create(join(self.staging_dir, _STARTED)) as handle:
            handle.write(json.dumps({"started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started)),
                                     "host": socket.gethostname(), "pid": os.getpid()}).encode())
        return self

    def _warn_about_leftovers(self) -> None:
        """A run killed outright (SIGKILL, a lost machine) cannot clean up: say so, delete nothing
        (another run may be writing there)."""
        pattern = join(self.output_dir, ".incomplete-*", _STARTED)
        for metadata in FileSystems.match([pattern])[0].metadata_list:
            with FileSystems.open(metadata.path) as handle:
                started = handle.read().decode(errors="replace")
            logging.warning("%s is the staging directory of a run that did not finish (%s); it is not part "
                            "of any output and can be deleted once that run is known to be dead",
                            posixpath.dirname(metadata.path), started)

    def __exit__(self, exc_type, exc, tb):
        _delete_tree(self.staging_dir)
        if exc_type is not None:
            logging.error("Run failed; nothing was published to %s (staging removed).", self.output_dir)
        return False

    def read_counts(self) -> Dict[str, int]:
        path = join(self.staging_dir, COUNTS_FILE)
        if not _exists(path):
            return {}
        with FileSystems.open(path) as handle:
            counts = json.loads(handle.read())
        FileSystems.delete([path])
        return counts

    def staged_path(self, relative: str) -> str:
        return join(self.staging_dir, relative)

    def publish(self, summary: dict) -> str:
        """Replaces the previous run's files with the staged ones; run_summary.json comes last."""
        _delete_tree(self.temp_dir)
        if _exists(join(self.staging_dir, _STARTED)):
            FileSystems.delete([join(self.staging_dir, _STARTED)])
        summary_path = join(self.output_dir, RUN_SUMMARY)
        if _exists(summary_path):
            FileSystems.delete([summary_path])
        old = [
            m.path
            for pattern in self._owned_globs
            for m in FileSystems.match([join(self.output_dir, pattern)])[0].metadata_list
        ]
        if old:
            FileSystems.delete(sorted(set(old)))
        staged = _list_files(self.staging_dir)
        prefix = self.staging_dir.rstrip("/") + "/"
        targets = [join(self.output_dir, path[len(prefix):]) for path in staged]
        for target in targets:
            parent = posixpath.dirname(target)
            if not _exists(parent):
                FileSystems.mkdirs(parent)
        FileSystems.rename(staged, targets)
        summary = dict(summary, seconds=round(time.time() - self.started, 3))
        with FileSystems.create(summary_path) as handle:
            handle.write(json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n")
        return summary_path
