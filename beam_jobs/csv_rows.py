"""CSV records -> typed columns, with every unusable cell named by line and column.

Records come from Python's C `csv` reader (quoted commas, quotes and newlines are valid CSV;
a UTF-8 BOM and CRLF are tolerated) with the file line each record starts on. Cells are
converted a whole column at a time with pyarrow; only a column that fails the fast cast in
one batch is re-read cell by cell to find and name the bad cells. An empty cell is a missing
value (None), never 0 or "".

An INT column accepts integers and lossless integral floats (`8.0`, `17031081000.0`, as
some exports write them); `7.5` or `twelve` is rejected. A FLOAT column accepts finite
numbers that fit a float32. tfx_bsl's own CSV decoder has no per-cell error path (it raises
on the first bad cell), hence this module.
"""

import csv
import io
import math
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs.options import UsageError

INT, FLOAT, BYTES = "INT", "FLOAT", "BYTES"
DEFAULT_BATCH_SIZE = 4096
_EXACT_FLOAT_INT = 2**53  # Beyond this a float64 no longer holds every integer.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class CsvRecord(NamedTuple):
    line: int  # 1-based line the record starts on.
    fields: List[str]
    error: Optional[str] = None  # the csv module's message when the record could not be read


class CsvBatch(NamedTuple):
    path: str
    records: List[CsvRecord]


class CellError(NamedTuple):
    row: int  # index into the batch's records
    column: Optional[str]
    reason: str
    detail: str


class Columns(NamedTuple):
    """Typed values of the rows that survived, column by column; None marks a missing value."""

    rows: List[int]  # indices into the batch's records
    values: Dict[str, pa.Array]  # column -> int64 / float32 / binary values, null when missing


def open_text(path: str):
    """Opens a CSV file for csv.reader: gz transparent, BOM dropped, newlines left to csv."""
    handle = FileSystems.open(path, compression_type=CompressionTypes.AUTO)
    return io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")


def read_header(path: str) -> List[str]:
    """The column names on the file's first line (names stripped); a usage error naming the
    file when it is empty or the line is not a header: a blank or repeated name, bad UTF-8."""
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        first = handle.readline()
    if not first.strip():
        raise UsageError(f"{path}:1: no header line (the file is empty or starts with a blank line); "
                         "every CSV input needs a header line (taxi_csv_to_tfrecord also takes --column_names)")
    try:
        names = [name.strip() for name in next(csv.reader([first.decode("utf-8-sig").rstrip("\r\n")]))]
    except (UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path}:1: cannot read the CSV header: {error}") from None
    if any(not name for name in names):
        raise UsageError(f"{path}:1: the CSV header must name every column, got {names!r}")
    if len(set(names)) != len(names):
        raise UsageError(f"{path}:1: the CSV header repeats a column name: {names!r}")
    return names


def iter_records(path: str, skip_header: bool) -> Iterator[CsvRecord]:
    """Every record of the file with its starting line; blank lines come as empty field lists."""
    with open_text(path) as text:
        reader = csv.reader(text, strict=True)
        last_line = 0
        header_pending = skip_header
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                # The reader resumes on the next line; the bad record is reported where it starts.
                start, last_line = last_line + 1, reader.line_num
                yield CsvRecord(start, [], str(error))
                continue
            start, last_line = last_line + 1, reader.line_num
            if header_pending and fields:
                header_pending = False
                continue
            yield CsvRecord(start, fields)


def iter_batches(path: str, skip_header: bool, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[CsvBatch]:
    batch: List[CsvRecord] = []
    for record in iter_records(path, skip_header):
        batch.append(record)
        if len(batch) == batch_size:
            yield CsvBatch(path, batch)
            batch = []
    if batch:
        yield CsvBatch(path, batch)


def record_text(fields: Sequence[str]) -> bytes:
    """The record as one CSV line again (for dead letters); undecodable bytes come back as they were."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode("utf-8", errors="surrogateescape")


def parse_int(text: str) -> int:
    """An integer cell: `8`, `-3`, or a lossless integral float such as `8.0` / `1.7e10`."""
    if "_" in text:  # Python accepts `1_000`; CSV exports do not mean it.
        raise ValueError(f"{text!r} is not an integer")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if not math.isfinite(value) or value != math.floor(value):
        raise ValueError(f"{text!r} is not an integer")
    if abs(value) >= _EXACT_FLOAT_INT:
        from decimal import Decimal

        exact = Decimal(text.strip())
        if exact != exact.to_integral_value():
            raise ValueError(f"{text!r} is not an integer")
        return int(exact)
    return int(value)


def parse_float(text: str) -> float:
    """A float cell: any finite number that fits a float32."""
    if "_" in text:
        raise ValueError(f"{text!r} is not a number")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise ValueError(f"{text!r} is not a finite float32")
    return value


_REASONS = {INT: "not_an_integer", FLOAT: "not_a_number", BYTES: "invalid_utf8"}


_ARROW_TYPES = {INT: pa.int64(), FLOAT: pa.float32(), BYTES: pa.binary()}


def _convert_slow(cells: Sequence[str], kind: str) -> Tuple[pa.Array, List[Tuple[int, str]]]:
    """Cell by cell, so each bad cell gets its own message (a bad cell becomes null)."""
    values, errors = [], []
    for index, text in enumerate(cells):
        if text == "":
            values.append(None)
            continue
        try:
            if kind == INT:
                values.append(parse_int(text))
            elif kind == FLOAT:
                values.append(parse_float(text))
            else:
                values.append(text.encode("utf-8"))
        except (ValueError, UnicodeEncodeError) as error:
            values.append(None)
            detail = f"{text!r} is not valid UTF-8" if isinstance(error, UnicodeEncodeError) else str(error)
            errors.append((index, detail))
    return pa.array(values, _ARROW_TYPES[kind]), errors


def _convert_fast(cells: Sequence[str], kind: str) -> Optional[pa.Array]:
    """Whole-column cast with pyarrow; None when some cell needs the slow path."""
    try:
        strings = pa.array(cells, pa.string())
    except UnicodeEncodeError:
        return None
    strings = pc.if_else(pc.equal(strings, ""), pa.scalar(None, pa.string()), strings)
    if kind == BYTES:
        return strings.cast(pa.binary())
    try:
        if kind == INT:
            try:
                return pc.cast(strings, pa.int64())
            except pa.ArrowInvalid:
                floats = pc.cast(strings, pa.float64())
                array = floats.to_numpy(zero_copy_only=False)
                present = array[~pc.is_null(floats).to_numpy(zero_copy_only=False)]
                if not (np.all(np.abs(present) < _EXACT_FLOAT_INT) and np.all(present == np.floor(present))):
                    return None
                return pc.cast(floats, pa.int64())
        floats = pc.cast(strings, pa.float64())
        array = floats.to_numpy(zero_copy_only=False)
        present = ~pc.is_null(floats).to_numpy(zero_copy_only=False)
        if not np.all(np.isfinite(array[present])) or np.any(np.abs(array[present]) > _FLOAT32_MAX):
            return None
        return pc.cast(floats, pa.float32(), safe=False)
    except pa.ArrowInvalid:
        return None


def convert(records: Sequence[CsvRecord], names: Sequence[str], types: Dict[str, str]) -> Tuple[Columns, List[CellError]]:
    """Typed columns for the well-formed records; one CellError per rejected record.

    `names` are the file's columns in order; `types` maps each to INT/FLOAT/BYTES.
    A record is rejected for its first problem: a csv syntax error, a wrong field count,
    or a cell that does not parse as its column's type.
    """
    errors: List[CellError] = []
    good: List[int] = []
    for index, record in enumerate(records):
        if record.error is not None:
            errors.append(CellError(index, None, "malformed_csv", record.error))
        elif len(record.fields) != len(names):
            errors.append(CellError(index, None, "wrong_column_count",
                                    f"expected {len(names)} columns, found {len(record.fields)}"))
        else:
            good.append(index)
    columns = list(zip(*(records[i].fields for i in good))) if good else [() for _ in names]
    values: Dict[str, pa.Array] = {}
    bad_rows: Dict[int, CellError] = {}
    for name, cells in zip(names, columns):
        kind = types[name]
        converted = _convert_fast(cells, kind)
        if converted is None:
            converted, cell_errors = _convert_slow(cells, kind)
            for position, detail in cell_errors:
                row = good[position]
                if row not in bad_rows:
                    bad_rows[row] = CellError(row, name, _REASONS[kind], detail)
        values[name] = converted
    errors.extend(bad_rows.values())
    errors.sort(key=lambda e: e.row)
    if bad_rows:
        keep = [position for position, row in enumerate(good) if row not in bad_rows]
        values = {name: column.take(pa.array(keep, pa.int64())) for name, column in values.items()}
        good = [good[p] for p in keep]
    return Columns(good, values), errors
