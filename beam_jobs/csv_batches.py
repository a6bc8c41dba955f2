"""CSV lines -> typed Arrow RecordBatches for TFDV, with dead letters and file:line errors.

Why not `tfx_bsl`'s CsvTFXIO: it crashes the whole job on one row with a wrong number of
fields, cannot say which file and line a value came from, reads an INT column holding
integral floats (`8.0`, as `data2.csv` writes them) as FLOAT or crashes on it when the
schema says INT, and converts cell by cell in Python. Here lines keep their file and line
number (`inputs.ReadLineBatches`), rows that cannot be parsed are dead-lettered, and the
columns are typed with vectorised Arrow casts.

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
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from tensorflow_metadata.proto.v0 import schema_pb2

from beam_jobs import dead_letters, inputs
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
_EXACT_INT_LIMIT = 2.0**53  # Beyond this a float no longer names one integer.
_JOB = "csv"


class ReadCsvLines(beam.PTransform):
    """Files -> LineBatch elements (file, first line number, lines), spread over the workers.

    One file is read by one worker, so the Reshuffle is what lets a single large CSV be
    parsed by all of them.
    """

    def __init__(self, paths: Sequence[str], batch_size: int = inputs.DEFAULT_BATCH_SIZE):
        super().__init__()
        self._paths, self._batch_size = list(paths), batch_size

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._paths)
            | "ReadLines" >> beam.FlatMap(inputs.iter_line_batches, batch_size=self._batch_size)
            | "SpreadBatches" >> beam.Reshuffle()
        )


class ParsedBatch(NamedTuple):
    """The rows of one LineBatch that parsed, as one nullable string array per column."""

    path: str
    first_line: int
    columns: Dict[str, pa.Array]


class KindEvidence(NamedTuple):
    """The kind a column needs and the first place (file, line) that needed it."""

    kind: int
    path: str
    line: int
    value: str


def read_header(path: str) -> List[str]:
    """The column names from a CSV file's first line."""
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        first = handle.readline()
    try:
        names = next(csv.reader([first.decode("utf-8-sig").rstrip("\r\n")]), [])
    except (UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path}:1: cannot read the CSV header: {error}") from None
    if not names or any(not name.strip() for name in names):
        raise UsageError(f"{path}:1: the CSV header must name every column, got {names!r}")
    if len(set(names)) != len(names):
        raise UsageError(f"{path}:1: the CSV header repeats a column name: {names!r}")
    return names


def common_header(paths: Sequence[str]) -> List[str]:
    """The header all files share; a file with another header is a usage error naming it."""
    names = read_header(paths[0])
    for path in paths[1:]:
        other = read_header(path)
        if other != names:
            raise UsageError(f"{path}:1: CSV header {other} differs from {paths[0]}'s {names}")
    return names


def schema_kinds(schema: Optional[schema_pb2.Schema]) -> Dict[str, int]:
    if schema is None:
        return {}
    return {f.name: _SCHEMA_KINDS[f.type] for f in schema.feature if f.type in _SCHEMA_KINDS}


def _integral(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) <= _EXACT_INT_LIMIT)


def value_kind(strings: pa.Array) -> Tuple[Optional[int], Optional[int]]:
    """(kind, index of the first value that needed it) for a nullable string array."""
    present = strings.drop_null()
    if len(present) == 0:
        return None, None
    try:
        pc.cast(present, pa.int64())
        return INT, None
    except pa.ArrowInvalid:
        pass
    valid = np.flatnonzero(strings.is_valid().to_numpy(zero_copy_only=False))
    try:
        floats = pc.cast(present, pa.float64()).to_numpy()
    except pa.ArrowInvalid:
        numeric = np.array([_is_number(v) for v in present.to_pylist()])
        return BYTES, int(valid[np.argmin(numeric)])
    integral = _integral(floats)
    if integral.all():
        return INT, None
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
    """LineBatch -> ParsedBatch; KINDS_TAG gets the kinds its columns need.

    The first line of each file is its header and is skipped (the launcher checked it).
    Rows that are not valid UTF-8 CSV with one field per column go to DEAD_LETTER_TAG.
    """

    DEAD_LETTER_TAG = "dead_letters"
    COUNTS_TAG = "counts"
    KINDS_TAG = "kinds"

    def __init__(self, column_names: Sequence[str], job: str):
        self._names = list(column_names)
        self._job = job

    def setup(self):
        self._rejections = dead_letters.RejectionCounters(self._job)
        self._progress = Progress(self._job, "lines")

    def process(self, batch: inputs.LineBatch):
        counts = {"read": len(batch.lines)}
        rows: List[List[str]] = []
        numbers: List[int] = []
        for offset, raw in enumerate(batch.lines):
            number = batch.first_line + offset
            if number == 1:
                counts["header"] = 1
                continue
            if not raw.strip():
                counts["blank"] = counts.get("blank", 0) + 1
                continue
            letter = None
            try:
                fields = next(csv.reader([raw.decode("utf-8")]))
                if len(fields) != len(self._names):
                    letter = dead_letters.dead_letter(
                        batch.path, number, "wrong_field_count",
                        f"expected {len(self._names)} fields, got {len(fields)}", raw)
            except UnicodeDecodeError as error:
                letter = dead_letters.dead_letter(batch.path, number, "not_utf8", str(error), raw)
            except csv.Error as error:
                letter = dead_letters.dead_letter(batch.path, number, "bad_csv", str(error), raw)
            if letter is not None:
                key = "rejected." + letter["reason"]
                counts[key] = counts.get(key, 0) + 1
                self._rejections.inc(letter["reason"])
                yield pvalue.TaggedOutput(self.DEAD_LETTER_TAG, letter)
                continue
            rows.append(fields)
            numbers.append(number)
        self._progress.add(len(batch.lines))
        counts["rows"] = len(rows)
        yield pvalue.TaggedOutput(self.COUNTS_TAG, counts)
        if not rows:
            return
        columns = {
            name: pa.array([row[i] or None for row in rows], type=pa.string())
            for i, name in enumerate(self._names)
        }
        kinds = {}
        for name, strings in columns.items():
            kind, index = value_kind(strings)
            if kind is not None:
                at = numbers[index] if index is not None else numbers[0]
                value = strings[index].as_py() if index is not None else ""
                kinds[name] = KindEvidence(kind, batch.path, at, value)
        yield pvalue.TaggedOutput(self.KINDS_TAG, kinds)
        yield ParsedBatch(batch.path, batch.first_line, columns)


def column_kinds(found: Dict[str, KindEvidence], names: Sequence[str],
                 expected: Dict[str, int]) -> Dict[str, Optional[int]]:
    """Each column's kind: the widest of what its values need and what the schema says."""
    return {name: max(expected.get(name, INT), found[name].kind) if name in found else expected.get(name)
            for name in names}


def _to_record_batch(parsed: ParsedBatch, kinds: Dict[str, Optional[int]]) -> pa.RecordBatch:
    arrays = [to_list_array(strings, kinds.get(name)) for name, strings in parsed.columns.items()]
    return pa.RecordBatch.from_arrays(arrays, list(parsed.columns))


class CsvResult(NamedTuple):
    record_batches: beam.PCollection  # pa.RecordBatch, typed as TFXIO's CSV decoder types them
    dead_letters: beam.PCollection  # dead letter dicts
    counts: beam.PCollection  # {name: n} dicts to sum
    kinds: beam.PCollection  # one {column: KindEvidence} dict: the widest kind each column needs


class CsvToRecordBatches(beam.PTransform):
    """LineBatch elements of CSV files -> RecordBatches for `tfdv.GenerateStatistics`.

        result = line_batches | CsvToRecordBatches(column_names=names, schema=schema)
        stats = result.record_batches | tfdv.GenerateStatistics(stats_options)
    """

    def __init__(self, *, column_names: Sequence[str], schema: Optional[schema_pb2.Schema] = None,
                 job: str = _JOB):
        super().__init__()
        if not column_names:
            raise ValueError("column_names must name the CSV columns")
        self._names = list(column_names)
        self._schema_kinds = schema_kinds(schema)
        self._job = job

    def expand(self, line_batches):
        parsed = line_batches | "ParseCsv" >> beam.ParDo(ParseCsvLinesFn(self._names, self._job)).with_outputs(
            ParseCsvLinesFn.DEAD_LETTER_TAG, ParseCsvLinesFn.COUNTS_TAG, ParseCsvLinesFn.KINDS_TAG,
            main="parsed")
        kinds = parsed.kinds | "WidestKinds" >> beam.CombineGlobally(widest)
        types = kinds | "ColumnKinds" >> beam.Map(column_kinds, self._names, self._schema_kinds)
        record_batches = parsed.parsed | "TypeColumns" >> beam.Map(_to_record_batch, kinds=pvalue.AsSingleton(types))
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
