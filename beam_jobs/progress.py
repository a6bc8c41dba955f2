"""A progress line from inside a worker, at most every few seconds, for long jobs."""

import logging
import time


class Progress:
    def __init__(self, job: str, unit: str, every_seconds: float = 10.0):
        self._job, self._unit, self._every = job, unit, every_seconds
        self._count = 0
        self._start = self._last = time.monotonic()

    def add(self, n: int) -> None:
        self._count += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            rate = self._count / max(now - self._start, 1e-9)
            logging.info("%s: %s %s processed by this worker so far (%s/s)",
                         self._job, f"{self._count:,}", self._unit, f"{rate:,.0f}")
