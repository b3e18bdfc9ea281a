"""Engine progress as readable run.out lines (RELION shows run.out live in its GUI)."""

from __future__ import annotations

import logging
import re
import time

log = logging.getLogger(__name__)


class ProgressLog:
    """A ``Progress`` callback that logs at most one line per ``interval`` seconds per task.

    The first and the last step of a task, and every new kind of message (numbers aside),
    are always logged.
    """

    def __init__(self, label: str, interval: float = 10.0) -> None:
        self.label = label
        self.interval = interval
        self._last_time = 0.0
        self._last_key: tuple[int, str] | None = None

    def __call__(self, done: int, total: int, message: str) -> None:
        """Log ``done`` of ``total`` with ``message`` unless a line was written moments ago."""
        now = time.monotonic()
        key = (total, re.sub(r"[-+]?\d[\d.eE+-]*", "#", message))  # same task, new numbers
        if done in (0, 1) or done >= total or key != self._last_key or now - self._last_time >= self.interval:
            percent = f" {100 * done / total:3.0f}%" if total else ""
            log.info("%s [%d/%d%s] %s", self.label, done, total, percent, message)
            self._last_time = now
            self._last_key = key
