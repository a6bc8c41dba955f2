"""Spilled runs: the shuffle of encoded records by file name, and their merge in a stable order.

Records travel as Arrow tables: `key_hi` and `key_lo` (uint64; a record's place in its shard
is (key_hi, key_lo, its bytes)), `record` (its bytes) and any column the writer still needs.
A DoFn adds a batch's rows per output shard to a SpillBuffer; when it is full, and at the
end of the bundle, each shard's rows are written to a run file and only (shard, path) goes
through the shuffle: the runner moves file names, not records. A run file (Arrow IPC) holds
one record batch per key range, the top `range_bits` bits of key_hi. key_hi is a hash, so
the ranges are about even, as long as no key_hi value is shared by a large part of the rows
(only exact duplicate records share one in these jobs). The shard's writer reads one key
range of every run at a time, sorts it and writes it, so it holds one key range in memory,
not the shard, and the order does not depend on how the runner cut bundles.
"""

import contextlib
import json
import math
import uuid
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

from beam_jobs import example_bytes, outputs

KEY_HI, KEY_LO, RECORD = "key_hi", "key_lo", "record"
_SORT_KEYS = [(KEY_HI, "ascending"), (KEY_LO, "ascending"), (RECORD, "ascending")]
_RANGE_BYTES = 32 << 20  # about this much of a shard per key range
_MAX_RANGE_BITS = 12
_MAX_OPEN_RUNS = 64  # more runs are first combined, this many at a time


def range_bits_for(expected_bytes: int) -> int:
    """Key-range bits for a shard of about `expected_bytes` (an estimate: any value gives the
    same output; it only sets how much of the shard the writer holds at once)."""
    return min(_MAX_RANGE_BITS, max(0, math.ceil(math.log2(max(1, expected_bytes) / _RANGE_BYTES))))


_LINE_BITS = 40  # line numbers below 2**40, file indexes above them


def line_orders(file_index, lines) -> np.ndarray:
    """key_lo of records read from `lines` of the `file_index`-th input file (in sorted order;
    one index for all lines, or one per line)."""
    lines, files = np.asarray(lines, dtype=np.uint64), np.asarray(file_index, dtype=np.uint64)
    if (lines.size and int(lines.max()) >> _LINE_BITS) or (files.size and int(files.max()) >> (64 - _LINE_BITS)):
        raise ValueError(f"line {int(lines.max()) if lines.size else 0} or file index {int(files.max())} too large "
                         "for a record's sort key")
    return lines | (files << np.uint64(_LINE_BITS))


def as_ints(key_hi: np.ndarray, key_lo: np.ndarray) -> List[int]:
    """Each row's place (key_hi, then key_lo) as one Python int, to order rows in Python."""
    return [(high << 64) | low for high, low in zip(key_hi.tolist(), key_lo.tolist())]


def rows(key_hi: np.ndarray, key_lo: np.ndarray, records: pa.Array, **columns: pa.Array) -> pa.RecordBatch:
    """A batch of rows for SpillBuffer.add."""
    arrays = {KEY_HI: pa.array(key_hi, pa.uint64()), KEY_LO: pa.array(key_lo, pa.uint64()),
              RECORD: records.cast(pa.large_binary()), **columns}
    return pa.RecordBatch.from_arrays(list(arrays.values()), list(arrays))


class SpillBuffer:
    """One bundle's rows per output shard, spilled as run files into `temp_dir`.

    A DoFn `add`s batches of `rows(...)`, yields what `spill()` gives whenever the buffer is
    `full`, and in finish_bundle what `drain()` gives.
    """

    def __init__(self, temp_dir: str, range_bits: int, limit_bytes: int = 64 << 20):
        self._temp_dir, self._range_bits, self._limit = temp_dir, range_bits, limit_bytes
        self._parts: Dict[tuple, Dict[int, List[pa.RecordBatch]]] = {}  # shard key -> key range -> rows
        self._bytes = 0

    def add(self, batch: pa.RecordBatch, shard_keys: Sequence[tuple], which: np.ndarray) -> None:
        """Adds each row i of `batch` (made by `rows`) to shard `shard_keys[which[i]]`.

        The batch is put in (shard, key range) order here, while it is small: one take of a
        whole spill's rows costs several times more (its records are scattered in memory)."""
        places = (np.asarray(which, np.uint64) << np.uint64(self._range_bits)) | _key_ranges(batch, self._range_bits)
        order = np.argsort(places, kind="stable")
        batch, places = batch.take(pa.array(order)), places[order]
        bounds = [0, *(np.flatnonzero(places[1:] != places[:-1]) + 1).tolist(), len(places)]
        for begin, end in zip(bounds, bounds[1:]):
            if end > begin:
                place = int(places[begin])
                ranges = self._parts.setdefault(shard_keys[place >> self._range_bits], {})
                ranges.setdefault(place & ((1 << self._range_bits) - 1), []).append(batch.slice(begin, end - begin))
        self._bytes += batch.nbytes

    @property
    def full(self) -> bool:
        return self._bytes > self._limit

    def spill(self) -> Iterator[Tuple[tuple, str]]:
        """(shard_key, run path) per shard buffered; the buffer is empty afterwards."""
        parts, self._parts, self._bytes = self._parts, {}, 0
        for shard_key, ranges in sorted(parts.items()):
            name = "-".join(str(part) for part in shard_key)
            path = outputs.join(self._temp_dir, f"{name}-{uuid.uuid4().hex}.arrow")
            schema = next(iter(ranges.values()))[0].schema
            _write_ranges(path, schema, {key_range: pa.Table.from_batches(batches)
                                         for key_range, batches in ranges.items()})
            yield shard_key, path

    def drain(self):
        """What finish_bundle yields: the run of every shard still buffered."""
        for element in self.spill():
            yield outputs.in_global_window(element)


class SpillingDoFn(beam.DoFn):
    """A DoFn whose rows go to `self._runs`, a SpillBuffer per bundle: a subclass adds batches,
    yields `self._runs.spill()` when the buffer is full, and its finish_bundle (this one, or
    one that calls it) yields the runs left."""

    def __init__(self, temp_dir: str, range_bits: int):
        self._temp_dir, self._range_bits = temp_dir, range_bits

    def start_bundle(self):
        self._runs = SpillBuffer(self._temp_dir, self._range_bits)

    def finish_bundle(self):
        yield from self._runs.drain()


def _key_ranges(batch: pa.RecordBatch, range_bits: int) -> np.ndarray:
    key_hi = batch.column(KEY_HI).to_numpy()
    if not range_bits:
        return np.zeros(len(key_hi), np.uint64)
    return key_hi >> np.uint64(64 - range_bits)


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type) for column in table.columns],
        schema=table.schema)


_RANGES_KEY = b"key_ranges"  # schema metadata of a run: the key range of each record batch, in order


def _is_local(path: str) -> bool:
    return isinstance(FileSystems.get_filesystem(path), LocalFileSystem)


def _create(path: str):
    """A run file to write: Arrow's own file on local disk (no Python call per buffer), else
    Beam's FileSystems (GCS, ...)."""
    if _is_local(path):
        return pa.OSFile(path, "wb")
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _write_ranges(path: str, schema: pa.Schema, ranges: Dict[int, pa.Table]) -> None:
    """A run file: one record batch per non-empty key range, the ranges listed in its schema."""
    schema = schema.with_metadata({_RANGES_KEY: json.dumps(sorted(ranges)).encode()})
    with _create(path) as handle:
        with pa.ipc.new_file(handle, schema) as writer:
            for key_range in sorted(ranges):
                writer.write_batch(_one_batch(ranges[key_range]).replace_schema_metadata(schema.metadata))


class _Run:
    """An open run file: its rows of one key range at a time. Read (by Arrow itself on local
    disk), not memory-mapped: the pages of a mapped run would stay in the process's memory
    once read."""

    def __init__(self, path: str):
        self._handle = (pa.OSFile(path) if _is_local(path)
                        else FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
        self._reader = pa.ipc.open_file(self._handle)
        self.schema = self._reader.schema
        self.ranges = {key_range: batch for batch, key_range in enumerate(json.loads(self.schema.metadata[_RANGES_KEY]))}

    def batch(self, key_range: int) -> Optional[pa.RecordBatch]:
        index = self.ranges.get(key_range)
        return None if index is None else self._reader.get_batch(index)

    def close(self) -> None:
        self._handle.close()


def _range_tables(runs: List[_Run]) -> Iterator[Tuple[int, pa.Table]]:
    """(key range, every run's rows of it) for each key range some run holds, in order."""
    for key_range in sorted(set().union(*(run.ranges for run in runs))):
        yield key_range, pa.Table.from_batches(
            [batch for batch in (run.batch(key_range) for run in runs) if batch is not None], schema=runs[0].schema)


@contextlib.contextmanager
def _opened(paths: List[str]) -> Iterator[List[_Run]]:
    with contextlib.ExitStack() as stack:
        runs = []
        for path in paths:
            runs.append(_Run(path))
            stack.callback(runs[-1].close)
        yield runs


def _combine(paths: List[str]) -> str:
    """One run holding the rows of `paths`."""
    combined = f"{paths[0]}.{uuid.uuid4().hex[:8]}.combined.arrow"
    with _opened(paths) as runs:
        _write_ranges(combined, runs[0].schema, dict(_range_tables(runs)))
    return combined


def sorted_ranges(paths: Iterable[str]) -> Iterator[pa.Table]:
    """The runs' rows, one key range at a time, sorted by (key_hi, key_lo, record)."""
    paths = sorted(paths)
    while len(paths) > _MAX_OPEN_RUNS:
        paths = [_combine(paths[start:start + _MAX_OPEN_RUNS]) for start in range(0, len(paths), _MAX_OPEN_RUNS)]
    if not paths:
        return
    with _opened(paths) as runs:
        for _, table in _range_tables(runs):
            yield _take(table, pc.sort_indices(table, sort_keys=_SORT_KEYS))


def _take(table: pa.Table, order: pa.Array) -> pa.Table:
    """table.take(order), with long records (outputs.LONG_RECORD_BYTES) copied one slice each
    rather than by Arrow's take (3x slower on a key range of QuickDraw's 6 KB Examples; on a
    batch of 500 of them, as SpillBuffer.add takes, Arrow's is faster)."""
    records = table.column(RECORD)
    if not len(records) or records.null_count or records.nbytes < outputs.LONG_RECORD_BYTES * len(records):
        return table.take(order)
    columns = [_gather_records(records, order) if name == RECORD else table.column(name).take(order)
               for name in table.column_names]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _gather_records(records: pa.ChunkedArray, order: pa.Array) -> pa.LargeBinaryArray:
    """records.take(order) for a large_binary column without nulls, into one buffer allocated once."""
    order = order.to_numpy().astype(np.int64)
    lengths = np.concatenate([np.diff(example_bytes.binary_offsets(chunk)) for chunk in records.chunks])
    offsets = example_bytes.offsets_of(lengths[order])
    positions = np.empty(len(order), np.int64)
    positions[order] = offsets[:-1]  # where each source row goes
    out = np.empty(int(offsets[-1]), np.uint8)
    first = 0
    for chunk in records.chunks:
        example_bytes.place_values(out, positions[first:first + len(chunk)], chunk)
        first += len(chunk)
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(order),
                                            [None, pa.py_buffer(offsets), pa.py_buffer(out)])


def write_shard(path: str, runs: Iterable[str], write: Callable[[str, Iterator], None],
                to_records: Callable = lambda table: table.column(RECORD)) -> int:
    """Writes the runs' rows in order with `write(path, record arrays)`, each sorted key range
    as `to_records(table)`: its records (which may leave rows out), or outputs.Suffixed.
    Returns the number of records written."""
    written = 0

    def record_arrays():
        nonlocal written
        for table in sorted_ranges(runs):
            records = to_records(table)
            if isinstance(records, outputs.Suffixed):
                records = outputs.Suffixed(*map(_one_array, records))
                written += len(records.records)
            else:
                records = _one_array(records)
                written += len(records)
            yield records

    write(path, record_arrays())
    return written


def _one_array(array) -> pa.Array:
    if not isinstance(array, pa.ChunkedArray):
        return array
    if array.num_chunks == 1:  # as after a take: no copy
        return array.chunk(0)
    return pa.concat_arrays(array.chunks) if array.num_chunks else pa.array([], array.type)


def _write_shard(shard_runs, directory: str, file_names: Dict, write: Callable) -> Tuple:
    shard_key, paths = shard_runs
    return shard_key, write_shard(outputs.join(directory, file_names[shard_key]), paths, write)


class WriteSpilledShards(outputs.WriteSortedShards):
    """`(shard_key, run path)` pairs from SpillBuffers -> one file per key of `file_names`.

    Each file holds its runs' records in order, written by `write(path, record arrays)`; keys
    with no run get an empty file. Only runs whose paths came through the shuffle are read,
    so the leftovers of a retried bundle never reach the output. The output PCollection
    holds `(shard_key, record_count)` per file.
    """

    _write_group = staticmethod(_write_shard)
