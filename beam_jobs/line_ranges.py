"""Large uncompressed text files cut into byte ranges of whole lines, with their line numbers.

One big CSV read by one worker leaves the others idle, and shipping its lines to them costs
more than parsing. So the launcher cuts each large uncompressed file at newlines into ranges
of equal size, at most about `target_bytes`, counting newlines on the way so every range
knows the number of its first line (one sequential read of the file: about 0.03 s per 100 MB
from the page cache); each worker then reads only its ranges. A compressed file cannot be
entered in the middle and stays one range.
"""

import math
from typing import Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs import inputs

DEFAULT_TARGET_BYTES = 16 << 20
_CHUNK = 8 << 20
_MASK_BYTES = 1 << 20
_NEWLINE = ord("\n")
_COMPRESSED = (".gz", ".bz2", ".zst", ".deflate", ".zip", ".lzma", ".xz")


class LineRange(NamedTuple):
    """Bytes [start, end) of `path` (end None: to the end), starting at line `first_line`."""

    path: str
    start: int
    end: Optional[int]
    first_line: int


def _boundaries(path: str, size: int, target_bytes: int) -> List[tuple]:
    """(offset just after a newline, number of the line starting there) at the first newline
    from each point that cuts the file into equal parts of at most target_bytes: equal, so
    that workers given the same number of ranges finish together."""
    parts = math.ceil(size / target_bytes)
    marks = iter([size * part // parts for part in range(1, parts)])
    cuts, wanted = [], next(marks, None)
    lines_before, offset = 0, 0
    buffer = bytearray(_CHUNK)  # one buffer read into and one mask, reused: no fresh pages per chunk
    is_newline = np.empty(_CHUNK, dtype=bool)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while wanted is not None:
            length = handle.readinto(buffer)
            if not length:
                break
            chunk = memoryview(buffer)[:length]
            newlines = np.equal(np.frombuffer(chunk, np.uint8), _NEWLINE, out=is_newline[:length])
            position = max(wanted - offset, 0)
            while position < length:
                newline = buffer.find(b"\n", position, length)
                if newline < 0:
                    break
                cut = offset + newline + 1
                if cut < size:
                    cuts.append((cut, lines_before + int(np.count_nonzero(newlines[:newline + 1])) + 1))
                while wanted is not None and wanted < cut:  # the points inside the line just passed
                    wanted = next(marks, None)
                if wanted is None:
                    break
                position = wanted - offset
            lines_before += int(np.count_nonzero(newlines))  # numpy counts 3x faster than bytes.count
            offset += length
    return cuts


def plan(paths: Sequence[str], target_bytes: int = DEFAULT_TARGET_BYTES) -> List[LineRange]:
    """The ranges of every file, in file order."""
    ranges = []
    for path in paths:
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        if path.endswith(_COMPRESSED) or size <= target_bytes:
            ranges.append(LineRange(path, 0, None, 1))
            continue
        starts = [(0, 1)] + _boundaries(path, size, target_bytes)
        ends = [start for start, _ in starts[1:]] + [None]
        ranges.extend(LineRange(path, start, end, first) for (start, first), end in zip(starts, ends))
    return ranges


class LineBlock(NamedTuple):
    """`count` consecutive lines of one file, the first numbered `first_line`: bytes
    [start, end) of `buffer`, the lines joined by their newlines (as in the file, but for a
    compressed file, whose lines come decompressed and CR-stripped). Arrow's CSV reader takes
    them without a copy (`data()`); `lines()` splits them for the line-by-line path. No line
    object is made otherwise: a range of 125,000 lines split into bytes objects cost more
    than Arrow's parse of it."""

    path: str
    first_line: int
    count: int
    buffer: bytes
    start: int
    end: int

    def __repr__(self) -> str:  # not the buffer: a range is megabytes
        return f"LineBlock({self.path!r}, lines {self.first_line}-{self.first_line + self.count - 1})"

    def data(self) -> memoryview:
        return memoryview(self.buffer)[self.start:self.end]

    def lines(self) -> List[bytes]:
        """The lines, newline stripped, CRLF tolerated."""
        if not self.count:
            return []
        lines = self.buffer[self.start:self.end].split(b"\n")
        return [line.rstrip(b"\r") for line in lines] if self._holds_cr() else lines

    def has_lone_cr(self) -> bool:
        """Whether a CR not followed by a newline is in the lines: Arrow's reader ends a row there."""
        if not self._holds_cr():
            return False
        stop = min(self.end + 1, len(self.buffer))  # with the newline after the last line
        return self.buffer.count(b"\r", self.start, stop) != self.buffer.count(b"\r\n", self.start, stop)

    def _holds_cr(self) -> bool:
        return self.buffer.find(b"\r", self.start, self.end) >= 0

    def without_first_line(self) -> "LineBlock":
        newline = self.buffer.find(b"\n", self.start, self.end)
        start = self.end if newline < 0 else newline + 1
        return LineBlock(self.path, self.first_line + 1, max(self.count - 1, 0), self.buffer, start, self.end)


def iter_line_blocks(line_range: LineRange, batch_size: int = inputs.DEFAULT_BATCH_SIZE) -> Iterator[LineBlock]:
    """The range's lines in numbered blocks of `batch_size` lines."""
    if line_range.path.endswith(_COMPRESSED):  # one range, read as the lines come
        for batch in inputs.iter_line_batches(line_range.path, batch_size):
            joined = b"\n".join(batch.lines)
            yield LineBlock(batch.path, batch.first_line, len(batch.lines), joined, 0, len(joined))
        return
    # A range is at most about target_bytes long: read whole, its newlines found by numpy.
    with FileSystems.open(line_range.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.seek(line_range.start)
        data = handle.read() if line_range.end is None else handle.read(line_range.end - line_range.start)
    newlines = _newline_offsets(data)
    lines = len(newlines) + (1 if data and data[-1] != _NEWLINE else 0)  # the last line may end the file
    for first in range(0, lines, batch_size):
        last = min(first + batch_size, lines)
        start = int(newlines[first - 1]) + 1 if first else 0
        end = int(newlines[last - 1]) if last <= len(newlines) else len(data)
        yield LineBlock(line_range.path, line_range.first_line + first, last - first, data, start, end)


def _newline_offsets(data: bytes) -> np.ndarray:
    """Offsets of every newline in `data`, found _MASK_BYTES at a time into one reused mask."""
    view = np.frombuffer(data, np.uint8)
    is_newline = np.empty(min(len(view), _MASK_BYTES), dtype=bool)
    found = []
    for offset in range(0, len(view), _MASK_BYTES):
        part = view[offset:offset + _MASK_BYTES]
        found.append(np.flatnonzero(np.equal(part, _NEWLINE, out=is_newline[:len(part)])) + offset)
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)
