"""CSV lines -> typed Arrow RecordBatches for TFDV, with dead letters and file:line errors.

Why not `tfx_bsl`'s CsvTFXIO: it crashes the whole job on one row with a wrong number of
fields, cannot say which file and line a value came from, reads an INT column holding
integral floats (`8.0`, as `data2.csv` writes them) as FLOAT or crashes on it when the
schema says INT, and converts cell by cell in Python. Here lines keep their file and line
number (`line_ranges`), each batch of lines goes through Arrow's CSV parser (line by line
only when the batch holds a blank or bad line, which is dead-lettered), and the columns are
typed with vectorised Arrow casts.

Types follow TFXIO's CSV conventions (`large_list` of int64 / float32 / large_binary, null
for an empty cell) so TFDV sees what `tfdv.generate_statistics_from_csv` would give it. A
column's type is the widest of what its values need across the whole input (INT < FLOAT <
BYTES, a lossless integral float counts as INT) and what the schema says, if one is given:
a value that does not fit the schema's type widens the column, and the validator then
reports the type anomaly instead of the job dropping or crashing on the value.
"""

import csv
import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from tensorflow_metadata.proto.v0 import schema_pb2

from beam_jobs import csv_rows, dead_letters, inputs, line_ranges
from beam_jobs.options import UsageError
from beam_jobs.progress import Progress

INT, FLOAT, BYTES = 0, 1, 2  # The type order: a column takes the widest kind its values need.
KIND_NAMES = {INT: "INT", FLOAT: "FLOAT", BYTES: "BYTES"}
_SCHEMA_KINDS = {schema_pb2.INT: INT, schema_pb2.FLOAT: FLOAT, schema_pb2.BYTES: BYTES}
_ARROW_TYPES = {
    INT: pa.large_list(pa.int64()),
    FLOAT: pa.large_list(pa.float32()),
    BYTES: pa.large_list(pa.large_binary()),
}
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$|^\s*[+-]?(?i:nan|inf|infinity)\s*$"
_JOB = "csv"


class KindEvidence(NamedTuple):
    """The kind a column needs and the first place (file, line) that needed it."""

    kind: int
    path: str
    line: int
    value: str


def common_header(paths: Sequence[str]) -> List[str]:
    """The header all files share; a file with another header is a usage error naming it."""
    names = csv_rows.read_header(paths[0])
    for path in paths[1:]:
        other = csv_rows.read_header(path)
        if other != names:
            raise UsageError(f"{path}:1: CSV header {other} differs from {paths[0]}'s {names}")
    return names


def schema_kinds(schema: Optional[schema_pb2.Schema]) -> Dict[str, int]:
    if schema is None:
        return {}
    return {f.name: _SCHEMA_KINDS[f.type] for f in schema.feature if f.type in _SCHEMA_KINDS}


def value_kind(strings: pa.Array) -> Tuple[Optional[int], Optional[int]]:
    """(kind, index of the first value that needed it) for a nullable string array."""
    present = strings.drop_null()
    if len(present) == 0:
        return None, None
    valid = np.flatnonzero(strings.is_valid().to_numpy(zero_copy_only=False))
    try:
        floats = pc.cast(present, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        numeric = pc.match_substring_regex(present, _NUMBER).to_numpy(zero_copy_only=False)
        if numeric.all():  # The regex and Arrow's parser disagree on some value: ask Python.
            numeric = np.array([_is_number(v) for v in present.to_pylist()])
        return BYTES, int(valid[np.argmin(numeric)])
    integral = csv_rows.lossless_integral(floats)
    if integral.all():
        return INT, None
    if not np.isfinite(floats).all() or np.abs(floats[np.isfinite(floats)]).max() < csv_rows.EXACT_FLOAT_INT:
        return FLOAT, int(valid[np.argmin(integral)])
    try:  # Integers too large for a float to hold exactly: only int64 can say.
        pc.cast(present, pa.int64())
        return INT, None
    except pa.ArrowInvalid:
        return FLOAT, int(valid[np.argmin(integral)])


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def to_list_array(strings: pa.Array, kind: Optional[int]) -> pa.Array:
    """A nullable string column -> the large_list column TFDV expects (null = missing)."""
    if kind is None:
        return pa.nulls(len(strings))
    present = strings.drop_null()
    if kind == INT:
        try:
            values = pc.cast(present, pa.int64())
        except pa.ArrowInvalid:  # Integral floats such as "8.0"; value_kind vouched for them.
            values = pa.array(pc.cast(present, pa.float64()).to_numpy().astype(np.int64))
    elif kind == FLOAT:
        values = pc.cast(pc.cast(present, pa.float64()), pa.float32())
    else:
        values = pc.cast(present, pa.large_binary())
    valid = strings.is_valid().to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(valid, out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~valid))


def widest(evidence: Sequence[Dict[str, KindEvidence]]) -> Dict[str, KindEvidence]:
    """Merges per-batch kinds: the widest kind wins, then the earliest file and line."""
    merged: Dict[str, KindEvidence] = {}
    for kinds in evidence:
        for name, found in kinds.items():
            held = merged.get(name)
            if held is None or (-found.kind, found.path, found.line) < (-held.kind, held.path, held.line):
                merged[name] = found
    return merged


class ParseCsvLinesFn(beam.DoFn):
    """The first pass: LineRange -> {column: KindEvidence}, the kinds its columns need.

    It reads its range itself, batch by batch: a batch of lines passed on as an element
    would be pickled by Beam to sample its size. The first line of each file is its header
    and is skipped (the launcher checked it). Rows that are not valid UTF-8 CSV with one
    field per column go to DEAD_LETTER_TAG; the range's counts go to COUNTS_TAG.
    """

    DEAD_LETTER_TAG = "dead_letters"
    COUNTS_TAG = "counts"

    def __init__(self, column_names: Sequence[str], job: str, batch_size: int = inputs.DEFAULT_BATCH_SIZE):
        self._names = list(column_names)
        self._job = job
        self._batch_size = batch_size

    def setup(self):
        self._rejections = dead_letters.RejectionCounters(self._job)
        self._progress = Progress(self._job, "lines")

    def process(self, line_range: line_ranges.LineRange):
        counts: Dict[str, int] = {}
        found: Dict[str, KindEvidence] = {}
        for block in line_ranges.iter_line_blocks(line_range, self._batch_size):
            kinds = yield from self._batch_kinds(block, counts)
            found = widest([found, kinds])
        yield pvalue.TaggedOutput(self.COUNTS_TAG, counts)
        if found:
            yield found

    def _batch_kinds(self, block: line_ranges.LineBlock, counts: Dict[str, int]):
        """The kinds one block's columns need; counts its lines into `counts`."""
        columns, numbers = yield from self._parse(block, counts)
        self._progress.add(block.count)
        counts["read"] = counts.get("read", 0) + block.count
        counts["rows"] = counts.get("rows", 0) + len(numbers)
        if not numbers:
            return {}
        kinds = {}
        for name, strings in columns.items():
            kind, index = value_kind(strings)
            if kind is not None:
                at = numbers[index] if index is not None else numbers[0]
                value = strings[index].as_py() if index is not None else ""
                kinds[name] = KindEvidence(kind, block.path, at, value)
        return kinds

    def _parse(self, block: line_ranges.LineBlock, counts: Dict[str, int]):
        """(columns, line numbers) of the good rows; yields dead letters on the way."""
        if block.first_line == 1:
            counts["header"] = 1
            block = block.without_first_line()
        columns = self._parse_fast(block)
        if columns is not None:  # The common case: every line is a good row.
            return columns, range(block.first_line, block.first_line + block.count)
        rows, numbers = yield from self._sort_out(block.path, block.lines(), block.first_line, counts)
        return {name: _nullable_strings(cells) for name, cells in zip(self._names, zip(*rows))}, numbers


    def _parse_fast(self, block: line_ranges.LineBlock) -> Optional[Dict[str, pa.Array]]:
        """All lines at once with Arrow's CSV reader (cells as strings, empty = null).

        None when some line needs the careful path: blank, not UTF-8, not one record with
        one field per column, or holding a lone CR (Arrow's reader would end a row there, and a
        blank line elsewhere in the block would leave the row count right).
        """
        if not block.count or block.has_lone_cr():
            return None
        return csv_rows.arrow_parse_lines(block.data(), block.count, self._names, empty_as_null=True)

    def _reject(self, reason: str) -> None:
        self._rejections.inc(reason)

    def _sort_out(self, path: str, lines: List[bytes], first: int, counts: Dict[str, int]):
        """Line by line: blank lines counted, bad ones dead-lettered; returns (rows, line numbers)."""
        rows = [_parse_line(raw) for raw in lines]
        kept_rows, kept_numbers = [], []
        for number, raw, fields in zip(range(first, first + len(lines)), lines, rows):
            if not raw.strip():
                counts["blank"] = counts.get("blank", 0) + 1
                continue
            if isinstance(fields, list) and len(fields) != len(self._names):
                fields = ("wrong_field_count", f"expected {len(self._names)} fields, got {len(fields)}")
            if isinstance(fields, tuple):
                letter = dead_letters.dead_letter(path, number, fields[0], fields[1], raw)
                key = "rejected." + letter["reason"]
                counts[key] = counts.get(key, 0) + 1
                self._reject(letter["reason"])
                yield pvalue.TaggedOutput(self.DEAD_LETTER_TAG, letter)
                continue
            kept_rows.append(fields)
            kept_numbers.append(number)
        return kept_rows, kept_numbers


class ParseToRecordBatchFn(ParseCsvLinesFn):
    """The second pass: LineRange -> typed RecordBatches, once the column kinds are known.

    It parses exactly as the first pass did, which already reported dead letters and counts.
    It reads its range itself: a step with a side input has its input held by the runner
    until the side input is ready, and ranges are small where their lines are not.
    """

    def setup(self):
        pass

    def process(self, line_range: line_ranges.LineRange, kinds: Dict[str, Optional[int]]):
        for block in line_ranges.iter_line_blocks(line_range, self._batch_size):
            parse = self._parse(block, {})
            while True:  # Dead letters were the first pass's to report: drop them here.
                try:
                    next(parse)
                except StopIteration as done:
                    columns, numbers = done.value
                    break
            if numbers:
                yield _to_record_batch(columns, kinds)

    def _reject(self, reason: str) -> None:
        pass

def _parse_line(raw: bytes):
    """A line's fields, or (reason, detail) for a dead letter."""
    try:
        reader = csv.reader([raw.decode("utf-8")])
        return next(reader)
    except UnicodeDecodeError as error:
        return ("not_utf8", str(error))
    except csv.Error as error:
        return ("bad_csv", str(error))


def _nullable_strings(cells: Sequence[str]) -> pa.Array:
    """Cells as a string array, an empty cell as null (missing, as TFXIO reads it)."""
    strings = pa.array(cells, type=pa.string())
    return pc.if_else(pc.equal(pc.binary_length(strings), 0), pa.scalar(None, pa.string()), strings)


def column_kinds(found: Dict[str, KindEvidence], names: Sequence[str],
                 expected: Dict[str, int]) -> Dict[str, Optional[int]]:
    """Each column's kind: the widest of what its values need and what the schema says."""
    return {name: max(expected.get(name, INT), found[name].kind) if name in found else expected.get(name)
            for name in names}


def _to_record_batch(columns: Dict[str, pa.Array], kinds: Dict[str, Optional[int]]) -> pa.RecordBatch:
    arrays = [to_list_array(strings, kinds.get(name)) for name, strings in columns.items()]
    return pa.RecordBatch.from_arrays(arrays, list(columns))


class CsvResult(NamedTuple):
    record_batches: beam.PCollection  # pa.RecordBatch, typed as TFXIO's CSV decoder types them
    dead_letters: beam.PCollection  # dead letter dicts
    counts: beam.PCollection  # {name: n} dicts to sum
    kinds: beam.PCollection  # one {column: KindEvidence} dict (none without rows): the widest kind each column needs


class CsvToRecordBatches(beam.PTransform):
    """LineRange elements of CSV files -> RecordBatches for `tfdv.GenerateStatistics`.

        ranges = pipeline | beam.Create(line_ranges.plan(paths))  # Create reshuffles them over workers
        result = ranges | CsvToRecordBatches(column_names=names, schema=schema)
        stats = result.record_batches | tfdv.GenerateStatistics(stats_options)

    Two passes over the files: the first finds each column's kind (and reports dead letters
    and counts), the second parses again and types the columns. Re-reading costs less than
    holding every parsed row until the kinds are known, and only the small kinds dict
    travels between workers.
    """

    def __init__(self, *, column_names: Sequence[str], schema: Optional[schema_pb2.Schema] = None,
                 job: str = _JOB, batch_size: int = inputs.DEFAULT_BATCH_SIZE):
        super().__init__()
        if not column_names:
            raise ValueError("column_names must name the CSV columns")
        self._names = list(column_names)
        self._schema_kinds = schema_kinds(schema)
        self._job = job
        self._batch_size = batch_size

    def expand(self, ranges):
        parsed = (
            ranges
            | "ParseCsv" >> beam.ParDo(ParseCsvLinesFn(self._names, self._job, self._batch_size)).with_outputs(
                ParseCsvLinesFn.DEAD_LETTER_TAG, ParseCsvLinesFn.COUNTS_TAG, main="kinds")
        )
        # No default for an input without rows (nor the stage that adds it): the side input has
        # its own, and the second pass then has no row to type.
        kinds = parsed.kinds | "WidestKinds" >> beam.CombineGlobally(widest).without_defaults()
        types = kinds | "ColumnKinds" >> beam.Map(column_kinds, self._names, self._schema_kinds)
        no_rows = column_kinds({}, self._names, self._schema_kinds)
        record_batches = ranges | "ReadAndType" >> beam.ParDo(
            ParseToRecordBatchFn(self._names, self._job, self._batch_size),
            kinds=pvalue.AsSingleton(types, default_value=no_rows))
        return CsvResult(record_batches, parsed.dead_letters, parsed.counts, kinds)


def log_widened(found: Dict[str, KindEvidence], schema: Optional[schema_pb2.Schema]) -> List[str]:
    """Warns, with file and line, about columns whose values do not fit the schema's type."""
    expected = schema_kinds(schema)
    messages = []
    for name in sorted(found):
        if name in expected and found[name].kind > expected[name]:
            evidence = found[name]
            messages.append(
                f"{evidence.path}:{evidence.line} column {name!r}: value {evidence.value!r} is not "
                f"{KIND_NAMES[expected[name]]} as the schema says; the column is read as "
                f"{KIND_NAMES[evidence.kind]} and validation will report it")
    for message in messages:
        logging.warning("%s", message)
    return messages
