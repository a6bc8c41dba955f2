"""CSV records -> typed columns, with every unusable cell named by line and column.

A file is read in batches of lines. A batch with no quote character in which every line is
one record with one field per column (the common case, and all of the real taxi data) is
parsed at once by Arrow's CSV reader. From the first batch that is not, the rest of the file
goes record by record through Python's C `csv` reader: quoted commas, quotes and newlines are
valid CSV, and blank lines and bad records are found and named one by one. A UTF-8 BOM and
CRLF are tolerated. Cells are converted a whole column at a time with pyarrow; only a column
that fails the fast cast in one batch is re-read cell by cell to find and name the bad
cells. An empty cell is a missing value (None), never 0 or "".

An INT column accepts integers and lossless integral floats (`8.0`, `17031081000.0`, as
some exports write them); `7.5` or `twelve` is rejected. A FLOAT column accepts finite
numbers that fit a float32. tfx_bsl's own CSV decoder has no per-cell error path (it raises
on the first bad cell), hence this module.
"""

import codecs
import csv
import io
import itertools
import math
import re
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs import inputs
from beam_jobs.options import UsageError

INT, FLOAT, BYTES = "INT", "FLOAT", "BYTES"
# Lines per batch: each batch costs a few Arrow calls per column, so big batches amortise
# them (16,384 lines of taxi CSV: about 4 MB); measured 10% faster than 4,096 on 1M rows.
DEFAULT_BATCH_SIZE = 16384
EXACT_FLOAT_INT = 2**53  # From here on a float64 no longer names one integer (2**53 + 1 reads as 2**53).
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class CsvRecord(NamedTuple):
    line: int  # 1-based line the record starts on.
    fields: List[str]
    error: Optional[str] = None  # the csv module's message when the record could not be read


class CellError(NamedTuple):
    column: Optional[str]
    reason: str
    detail: str


class TypedBatch(NamedTuple):
    """Consecutive records of one file, converted: the rows kept and the records rejected."""

    path: str
    read: int  # records read, blank ones included
    blank: int
    lines: List[int]  # the line each kept row starts on
    values: Dict[str, pa.Array]  # the kept rows' typed values, null where a cell is empty
    texts: Dict[str, pa.Array]  # the kept rows' cells as read ("" where empty), in file column order
    rejected: List[Tuple[int, CellError, bytes]]  # (line, why, the record as a CSV line), by line


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


def typed_batches(path: str, names: Sequence[str], types: Dict[str, str], skip_header: bool,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[TypedBatch]:
    """The file's records converted by `types`, in batches of about `batch_size` lines.

    A batch of lines with no quote character in which every line holds one field per column
    (the common case, and all of the real taxi data) is parsed at once by Arrow's CSV
    reader. From the first batch that is not, the rest of the file goes record by record
    through Python's csv reader: a quoted field may span lines, and blank lines and bad
    records are found and named one by one.
    """
    lines = inputs.iter_lines(path)
    first = 1
    if skip_header:
        next(lines, None)
        first = 2
    while True:
        chunk = list(itertools.islice(lines, batch_size))
        if not chunk:
            return
        if first == 1:
            chunk[0] = chunk[0].removeprefix(codecs.BOM_UTF8)
        texts = _parse_plain_lines(chunk, names)
        if texts is None:
            yield from _careful_batches(path, itertools.chain(chunk, lines), first, names, types, batch_size)
            return
        yield _typed_batch(path, len(chunk), 0, list(range(first, first + len(chunk))), texts, types, [])
        first += len(chunk)


def _parse_plain_lines(chunk: List[bytes], names: Sequence[str]) -> Optional[Dict[str, pa.Array]]:
    """Each column's cells as strings, when every line is one unquoted record of len(names)
    fields in UTF-8; None otherwise (the careful path decides)."""
    data = b"".join(chunk)
    # Python's csv rejects a cell over its field limit (128 KiB): such lines take its path too.
    if b'"' in data or max(map(len, chunk)) > csv.field_size_limit():
        return None
    return arrow_parse_lines(data, len(chunk), names, empty_as_null=False)


def arrow_parse_lines(data: Union[bytes, memoryview], lines: int, names: Sequence[str], *,
                      empty_as_null: bool) -> Optional[Dict[str, pa.Array]]:
    """`lines` lines of CSV in `data` (read in place), each one record of len(names) fields,
    as string columns (an empty cell "" or null); None when Arrow's reader cannot read them so
    (a blank or bad line, not UTF-8, a lone CR), and the caller goes line by line."""
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(pa.py_buffer(data)),
            read_options=pa_csv.ReadOptions(column_names=list(names), use_threads=False),
            # A blank line is skipped, so the row count tells it apart from a row of empty cells.
            parse_options=pa_csv.ParseOptions(newlines_in_values=False, ignore_empty_lines=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in names}, strings_can_be_null=empty_as_null,
                quoted_strings_can_be_null=empty_as_null, null_values=[""]))
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if table.num_rows != lines:
        return None
    return {name: table.column(name).combine_chunks() for name in names}


def _careful_batches(path: str, raw_lines: Iterator[bytes], first: int, names: Sequence[str],
                     types: Dict[str, str], batch_size: int) -> Iterator[TypedBatch]:
    # Lines end at LF, CRLF or a lone CR, as Python's universal newlines (and csv) have them.
    text = (part for line in raw_lines
            for part in _LONE_CR.split(line.decode("utf-8", errors="surrogateescape")) if part)
    batch: List[CsvRecord] = []
    for record in _records(text, first):
        batch.append(record)
        if len(batch) == batch_size:
            yield _typed_records(path, batch, names, types)
            batch = []
    if batch:
        yield _typed_records(path, batch, names, types)


_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _records(text_lines: Iterator[str], first_line: int) -> Iterator[CsvRecord]:
    """Every record with the line it starts on; a blank line comes as an empty field list."""
    reader = csv.reader(text_lines, strict=True)
    before = first_line - 1
    last_line = before
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            # The reader resumes on the next line; the bad record is reported where it starts.
            start, last_line = last_line + 1, before + reader.line_num
            yield CsvRecord(start, [], str(error))
            continue
        start, last_line = last_line + 1, before + reader.line_num
        yield CsvRecord(start, fields)


def _typed_records(path: str, records: List[CsvRecord], names: Sequence[str], types: Dict[str, str]) -> TypedBatch:
    records_kept = [r for r in records if r.fields or r.error]
    rejected, good = [], []
    for record in records_kept:
        if record.error is not None:
            rejected.append((record.line, CellError(None, "malformed_csv", record.error), record_text([])))
        elif len(record.fields) != len(names):
            rejected.append((record.line, CellError(None, "wrong_column_count",
                                                    f"expected {len(names)} columns, found {len(record.fields)}"),
                             record_text(record.fields)))
        else:
            good.append(record)
    texts = {name: [r.fields[i] for r in good] for i, name in enumerate(names)}
    return _typed_batch(path, len(records), len(records) - len(records_kept), [r.line for r in good], texts, types,
                        rejected)


def _typed_batch(path: str, read: int, blank: int, lines: List[int], texts: Dict[str, Sequence[str]],
                 types: Dict[str, str], rejected: list) -> TypedBatch:
    """Converts the cells; rows with a bad cell join `rejected`, named by their first bad column."""
    values, bad = typed_columns(texts, types)
    if bad:
        texts = {name: cells.to_pylist() if isinstance(cells, pa.Array) else cells for name, cells in texts.items()}
        rejected = rejected + [(lines[row], error, record_text([cells[row] for cells in texts.values()]))
                               for row, error in bad.items()]
        keep = [row for row in range(len(lines)) if row not in bad]
        values = {name: column.take(pa.array(keep, pa.int64())) for name, column in values.items()}
        texts = {name: [cells[row] for row in keep] for name, cells in texts.items()}
        lines = [lines[row] for row in keep]
    rejected.sort(key=lambda item: item[0])
    strings = {name: cells if isinstance(cells, pa.Array) else pa.array(cells, pa.string())
               for name, cells in texts.items()}
    return TypedBatch(path, read, blank, lines, values, strings, rejected)


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
    if abs(value) >= EXACT_FLOAT_INT:
        from decimal import Decimal

        exact = Decimal(text.strip())
        if exact != exact.to_integral_value():
            raise ValueError(f"{text!r} is not an integer")
        return int(exact)
    return int(value)


def lossless_integral(floats: np.ndarray) -> np.ndarray:
    """Per value: does this float name exactly one integer (`8.0` yes; `7.5`, `inf` and
    anything from 2**53 up, where floats skip integers, no)? The INT rule of both CSV paths."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(floats) & (np.floor(floats) == floats) & (np.abs(floats) < EXACT_FLOAT_INT)


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
    for index, text in enumerate(cells.to_pylist() if isinstance(cells, pa.Array) else cells):
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
        strings = cells if isinstance(cells, pa.Array) else pa.array(cells, pa.string())
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
                if not lossless_integral(present).all():
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


def typed_columns(texts: Dict[str, Sequence[str]], types: Dict[str, str]) -> Tuple[Dict[str, pa.Array], Dict[int, CellError]]:
    """Each column's cells (a list or an Arrow string array) typed by `types`; the rows with a
    bad cell, each with the first bad column's error (their cells become null)."""
    values: Dict[str, pa.Array] = {}
    bad: Dict[int, CellError] = {}
    for name, cells in texts.items():
        kind = types[name]
        converted = _convert_fast(cells, kind)
        if converted is None:
            converted, cell_errors = _convert_slow(cells, kind)
            for row, detail in cell_errors:
                bad.setdefault(row, CellError(name, _REASONS[kind], detail))
        values[name] = converted
    return values, bad
