"""Dead letters: every record a job cannot use, kept with its file, line and a reason code."""

import json
import logging
from typing import Optional

import apache_beam as beam

DEAD_LETTER_DIR = "dead_letter"


def dead_letter(path: str, line: int, reason: str, detail: str, record: bytes,
                column: Optional[str] = None) -> dict:
    """The JSON-lines record written to DIR/dead_letter/ for one rejected input line."""
    letter = {
        "file": path,
        "line": line,
        "reason": reason,
        "detail": detail,
        "record": record.decode("utf-8", errors="replace"),
    }
    if column is not None:
        letter["column"] = column
    return letter


def describe(letter: dict) -> str:
    """One log line a user can act on: where, what, and why."""
    where = f"{letter['file']}:{letter['line']}"
    if "column" in letter:
        where += f" column {letter['column']!r}"
    return f"{where}: {letter['reason']}: {letter['detail']}"


def sort_key(letter: dict):
    return (letter["file"], letter["line"])


def encode(letter: dict) -> bytes:
    return json.dumps(letter, sort_keys=True, ensure_ascii=False).encode("utf-8")


class RejectionCounters:
    """One Beam counter per reason code, created lazily in the worker that meets the reason."""

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._counters = {}

    def inc(self, reason: str, n: int = 1) -> None:
        counter = self._counters.get(reason)
        if counter is None:
            counter = self._counters[reason] = beam.metrics.Metrics.counter(
                self._namespace, f"rejected_{reason}"
            )
        counter.inc(n)


class RejectionLog:
    """Per worker: counts a rejection in a job's counts dict and Beam counter, logs the first few."""

    def __init__(self, namespace: str, logged: int = 10):
        self._counters = RejectionCounters(namespace)
        self._limit, self._logged = logged, 0

    def reject(self, letter: dict, counts: dict) -> None:
        key = "rejected." + letter["reason"]
        counts[key] = counts.get(key, 0) + 1
        self._counters.inc(letter["reason"])
        if self._logged < self._limit:
            self._logged += 1
            suffix = " (further rejections are counted, not logged)" if self._logged == self._limit else ""
            logging.warning("Rejected %s%s", describe(letter), suffix)
