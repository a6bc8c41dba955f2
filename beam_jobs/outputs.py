"""Deterministic, atomic job outputs.

Records are written into a hidden staging directory inside the output directory, each shard
sorted by a stable key so the same input gives the same bytes on any runner and any number
of workers. Only when the pipeline succeeds are the files moved into place, and
`run_summary.json` is written last: a directory without it is not a complete output.
"""

import collections
import heapq
import json
import logging
import os
import pickle
import posixpath
import socket
import struct
import time
import uuid
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_jobs.splits import SPLIT_NAMES

RUN_SUMMARY = "run_summary.json"
COUNTS_FILE = "_counts.json"
_STARTED = "_started.json"  # in the staging directory: who is writing there, since when


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def shard_name(prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def tfrecord_suffix(compression: str) -> str:
    return ".tfrecord.gz" if compression == "gzip" else ".tfrecord"


def _masked_crc32c(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def write_tfrecords(path: str, records: Iterable[bytes], compression: str) -> None:
    """Writes a TFRecord file (length, masked CRC32C of the length, data, masked CRC32C of the
    data, per record; gzip-compressed as a whole with --compression gzip).

    The framing is written here rather than by tf.io.TFRecordWriter so that worker processes
    never import TensorFlow (seconds of start-up each); tf.data reads the files and checks
    every CRC in the tests. Length headers are cached (records repeat lengths) and written
    in chunks of records.
    """
    compression_type = CompressionTypes.GZIP if compression == "gzip" else CompressionTypes.UNCOMPRESSED
    headers: Dict[int, bytes] = {}
    with FileSystems.create(path, compression_type=compression_type) as handle:
        chunk: List[bytes] = []
        for record in records:
            header = headers.get(len(record))
            if header is None:
                length = struct.pack("<Q", len(record))
                header = headers[len(record)] = length + _masked_crc32c(length)
            chunk += (header, record, _masked_crc32c(record))
            if len(chunk) >= 3 * 1024:
                handle.write(b"".join(chunk))
                chunk.clear()
        handle.write(b"".join(chunk))


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


_RUN_CHUNK = 256
_MERGE_FAN_IN = 64


def _write_run(path: str, rows: Iterable[tuple]) -> None:
    """Rows in small pickled chunks, so that a merge streams many runs with little memory."""
    with FileSystems.create(path) as handle:
        chunk = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == _RUN_CHUNK:
                pickle.dump(chunk, handle, protocol=pickle.HIGHEST_PROTOCOL)
                chunk = []
        if chunk:
            pickle.dump(chunk, handle, protocol=pickle.HIGHEST_PROTOCOL)


def write_sorted_run(path: str, rows: list) -> None:
    """Writes `rows` sorted as tuples: the sort key first, then the rest (so rows with equal
    keys come in one order whatever the runner did)."""
    rows.sort()
    _write_run(path, rows)


def _read_run(path: str) -> Iterator[tuple]:
    with FileSystems.open(path) as handle:
        while True:
            try:
                yield from pickle.load(handle)
            except EOFError:
                return


def merge_sorted_runs(paths: Iterable[str]) -> Iterator[tuple]:
    """All rows of the runs in order: a streaming k-way merge with at most 64 runs open (more
    are first merged, 64 at a time, into intermediate runs written beside them)."""
    paths = sorted(paths)
    while len(paths) > _MERGE_FAN_IN:
        merged = []
        for start in range(0, len(paths), _MERGE_FAN_IN):
            group = paths[start:start + _MERGE_FAN_IN]
            merged.append(f"{group[0]}.{uuid.uuid4().hex[:8]}.merged.run")
            _write_run(merged[-1], heapq.merge(*(_read_run(path) for path in group)))
        paths = merged
    return heapq.merge(*(_read_run(path) for path in paths))


_LINE_BITS = 40  # Line numbers below 2**40; file indexes above them.


def record_orders(key_hashes: Sequence[int], file_index: int, lines: Sequence[int]) -> List[int]:
    """Each record's place in its shard, as one int (cheap to pickle and compare): its key's
    64-bit hash, then its file's index among the inputs, then its line."""
    if (len(lines) and max(lines) >> _LINE_BITS) or file_index >> (64 - _LINE_BITS):
        raise ValueError(f"line {max(lines)} or file index {file_index} too large for a record's sort key")
    file_bits = file_index << _LINE_BITS
    return [(key_hash << 64) | file_bits | line for key_hash, line in zip(key_hashes, lines)]


class SpillBuffer:
    """One bundle's rows per output shard, spilled as sorted run files into `temp_dir`.

    A DoFn `add`s rows (tuples: sort key first, record bytes last), yields what `spill()`
    gives whenever the buffer is `full`, and in finish_bundle what `drain()` gives. Only the
    runs' paths then go through the shuffle: the runner moves file names, not records, so its
    memory does not grow with the input.
    """

    def __init__(self, temp_dir: str, limit_bytes: int = 64 << 20):
        self._temp_dir, self._limit = temp_dir, limit_bytes
        self._rows: Dict[tuple, list] = {}
        self._bytes = 0

    def add(self, shard_key: tuple, row: tuple) -> None:
        self._rows.setdefault(shard_key, []).append(row)
        self._bytes += len(row[-1])

    @property
    def full(self) -> bool:
        return self._bytes > self._limit

    def spill(self) -> Iterator[Tuple[tuple, str]]:
        """(shard_key, run path) per shard buffered; the buffer is empty afterwards."""
        rows_by_shard, self._rows, self._bytes = self._rows, {}, 0
        for shard_key, rows in sorted(rows_by_shard.items()):
            name = "-".join(str(part) for part in shard_key)
            path = join(self._temp_dir, f"{name}-{uuid.uuid4().hex}.run")
            write_sorted_run(path, rows)
            yield shard_key, path

    def drain(self) -> Iterator[WindowedValue]:
        """What finish_bundle yields: the run of every shard still buffered."""
        for element in self.spill():
            yield in_global_window(element)


class SpillingDoFn(beam.DoFn):
    """A DoFn whose records go to `self._runs`, a SpillBuffer per bundle: a subclass adds
    rows, yields `self._runs.spill()` when the buffer is full, and its finish_bundle (this
    one, or one that calls it) yields the runs left."""

    def __init__(self, temp_dir: str):
        self._temp_dir = temp_dir

    def start_bundle(self):
        self._runs = SpillBuffer(self._temp_dir)

    def finish_bundle(self):
        yield from self._runs.drain()


def in_global_window(value) -> WindowedValue:
    """An element for finish_bundle to emit (it must name the element's window)."""
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


def write_merged(path: str, runs: Iterable[str], write: Callable,
                 to_record: Callable[[tuple], Optional[bytes]] = lambda row: row[-1]) -> int:
    """Writes the runs' rows merged in order with `write(path, records)`, each row as
    `to_record(row)` (None leaves the row out); returns the number of records written."""
    written = 0

    def records():
        nonlocal written
        for row in merge_sorted_runs(runs):
            record = to_record(row)
            if record is not None:
                written += 1
                yield record

    write(path, records())
    return written


def _write_merged(shard_runs, directory: str, file_names: Dict, write: Callable) -> Tuple:
    shard_key, paths = shard_runs
    return shard_key, write_merged(join(directory, file_names[shard_key]), paths, write)


class WriteSpilledShards(WriteSortedShards):
    """`(shard_key, run path)` pairs from SpillBuffers -> one file per key of `file_names`.

    Each file holds its runs' records merged in order, written by `write(path, records)`;
    keys with no run get an empty file. Only runs whose paths came through the shuffle are
    read, so the leftovers of a retried bundle never reach the output. The output
    PCollection holds `(shard_key, record_count)` per file.
    """

    _write_group = staticmethod(_write_merged)


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

        return counts | "SumCounts" >> beam.CombineGlobally(merge_counts) | "WriteCounts" >> beam.Map(write)


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
