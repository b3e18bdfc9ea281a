"""SIGTERM/SIGINT become a polite stop request that the engine sees between steps."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals(
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[Callable[[], bool]]:
    """Yield a ``should_stop`` callable that turns True after SIGTERM or SIGINT.

    The engine polls it, checkpoints and raises AbortRequested, so a killed job loses
    nothing it finished. Only installs handlers in the main thread.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    def handler(signum: int, _frame: object) -> None:
        if flag.is_set():  # a second signal: stop now
            raise KeyboardInterrupt
        log.warning("received %s: finishing the current step, then stopping", signal.Signals(signum).name)
        flag.set()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag.is_set
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
