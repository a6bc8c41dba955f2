"""Input files: pattern expansion at launch, and line reading that keeps file and line number.

Beam's text sources do not report line numbers; dead letters need them, so each file is
read whole by one worker (any FileSystem Beam knows: local, gs://, ...; .gz transparently)
and its lines travel in batches, which keeps per-element overhead off the hot path. Input
of many files spreads over workers; one huge file is read by one worker.
"""

import gzip
import zlib
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs.options import UsageError

DEFAULT_BATCH_SIZE = 512


class LineBatch(NamedTuple):
    """Consecutive lines of one file; `first_line` is the 1-based number of lines[0]."""

    path: str
    first_line: int
    lines: List[bytes]


def expand_patterns(patterns: Sequence[str]) -> List[str]:
    """Resolves globs to a sorted, de-duplicated file list; fails fast on a pattern with no file."""
    paths = set()
    for pattern in patterns:
        try:
            metadata = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # Beam wraps filesystem errors in BeamIOError.
            raise UsageError(f"cannot list input {pattern!r}: {error}") from error
        files = [m.path for m in metadata if not m.path.endswith("/")]
        if not files:
            raise UsageError(f"input pattern {pattern!r} matches no file")
        paths.update(files)
    return sorted(paths)


def total_size(paths: Iterable[str]) -> int:
    return sum(size for _, size in _sizes(paths))


def _sizes(paths: Iterable[str]) -> List[Tuple[str, int]]:
    paths = list(paths)
    return [(path, result.metadata_list[0].size_in_bytes)
            for path, result in zip(paths, FileSystems.match(paths))] if paths else []


# A gzip file holds about this many times its size (text and TFRecords of Examples).
_GZIP_RATIO = 5


def mean_line_bytes(paths: Sequence[str], sample_bytes: int = 1 << 20) -> Optional[float]:
    """Mean length of the first lines of the files, in order (about `sample_bytes` of them,
    decompressed), for estimates: the same files give the same figure. None without a line."""
    read = lines = 0
    for path in paths:
        for line in iter_lines(path):
            read, lines = read + len(line), lines + 1
            if read >= sample_bytes:
                return read / lines
    return read / lines if lines else None


def expanded_size(paths: Iterable[str]) -> int:
    """About how many bytes the files hold once decompressed (an estimate, for sizing buffers)."""
    return sum(size * (_GZIP_RATIO if path.endswith(".gz") else 1) for path, size in _sizes(paths))


def _open(path: str):
    if path.endswith(".gz"):
        # Python's gzip notices a truncated file (EOFError); Beam's decompressor stops quietly.
        return gzip.GzipFile(fileobj=FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO)


def iter_lines(path: str) -> Iterator[bytes]:
    """The file's lines as read (line endings kept).

    A file that cannot be read to its end fails the job with its name and the last line read:
    the lines after that point are unknown, so they cannot be dead-lettered.
    """
    number = 0
    try:
        with _open(path) as handle:
            for number, line in enumerate(iter(handle.readline, b""), start=1):
                yield line
    except (OSError, EOFError, zlib.error) as error:
        raise IOError(f"{path}: cannot read past line {number}: {error}. Fix or remove the file and rerun.") from error


def iter_line_batches(path: str, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[LineBatch]:
    """Yields the file's lines (newline stripped, CRLF tolerated) in numbered batches."""
    batch: List[bytes] = []
    first = 1
    for number, line in enumerate(iter_lines(path), start=1):
        batch.append(line.rstrip(b"\r\n"))
        if len(batch) == batch_size:
            yield LineBatch(path, first, batch)
            batch, first = [], number + 1
    if batch:
        yield LineBatch(path, first, batch)
