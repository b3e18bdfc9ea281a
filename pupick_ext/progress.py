"""Progress reporting for entry points: a bar on a terminal, log lines elsewhere (RELION's run.out)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import click

log = logging.getLogger("pupick")


class ProgressReporter:
    """A ``Progress`` callable: draws a click progress bar on a TTY, else logs every few percent."""

    def __init__(self, label: str, interactive: bool | None = None, every_seconds: float = 10.0) -> None:
        self.label = label
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.every = every_seconds
        self._bar: Any = None
        self._total = 0
        self._last_log = 0.0
        self._last_done = 0

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if self.interactive:
            if self._bar is None or total != self._total:
                self.close()
                self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                              show_pos=True, show_eta=True)
                self._bar.__enter__()
                self._total = total
                self._last_done = 0
            self._bar.update(done - self._last_done, current_item=message)
            self._last_done = done
            if done >= total:
                self.close()
            return
        now = time.monotonic()
        if done >= total or now - self._last_log >= self.every or done == 1:
            log.info("%s: %d/%d %s", self.label, done, total, message)
            self._last_log = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
