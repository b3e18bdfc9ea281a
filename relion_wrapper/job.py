"""The RELION job contract: exit markers, the abort file, and the try/finally around a run.

RELION's pipeliner decides a job's fate from files in the job directory
(src/pipeline_control.h, src/pipeliner.cpp checkProcessCompletion):
``RELION_JOB_EXIT_SUCCESS``, ``RELION_JOB_EXIT_FAILURE``, ``RELION_JOB_EXIT_ABORTED``;
the GUI asks a running job to stop by creating ``RELION_JOB_ABORT_NOW``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from pupick_ext import AbortRequested, PupickError, write_atomic

log = logging.getLogger(__name__)

EXIT_SUCCESS = "RELION_JOB_EXIT_SUCCESS"
EXIT_FAILURE = "RELION_JOB_EXIT_FAILURE"
EXIT_ABORTED = "RELION_JOB_EXIT_ABORTED"
ABORT_NOW = "RELION_JOB_ABORT_NOW"
EXIT_MARKERS: tuple[str, ...] = (EXIT_SUCCESS, EXIT_FAILURE, EXIT_ABORTED)

#: Process exit codes, as RELION's own programs use them (pipeline_control_relion_exit).
RC_SUCCESS, RC_FAILURE, RC_ABORTED = 0, 1, 2


class Terminated(PupickError):
    """The process received SIGTERM (queue system or a user's kill)."""


class JobDirectory:
    """A RELION job directory: its markers and its abort file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def marker(self, name: str) -> Path:
        """Path of one of RELION's control files in this job directory."""
        return self.path / name

    def clear_markers(self) -> None:
        """Remove exit markers left by an earlier run (RELION's runJob does the same)."""
        for name in EXIT_MARKERS:
            with contextlib.suppress(FileNotFoundError):
                self.marker(name).unlink()

    def abort_requested(self) -> bool:
        """Whether RELION asked the job to stop."""
        return self.marker(ABORT_NOW).exists()

    def check_abort(self) -> None:
        """Raise :class:`AbortRequested` if RELION asked the job to stop."""
        if self.abort_requested():
            raise AbortRequested(f"{ABORT_NOW} found: stopping as RELION asked")

    def finish(self, marker: str) -> None:
        """Write exactly one exit marker (and drop the abort request once honoured)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if marker == EXIT_ABORTED:
            with contextlib.suppress(FileNotFoundError):
                self.marker(ABORT_NOW).unlink()
        for other in EXIT_MARKERS:
            if other != marker:
                with contextlib.suppress(FileNotFoundError):
                    self.marker(other).unlink()
        write_atomic(self.marker(marker), "")


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Turn SIGTERM into an exception so the finally-block still writes a marker."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated("terminated by a signal (SIGTERM)")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line(text: str) -> str:
    """The first non-empty line of ``text`` (run.err shows one line per failure)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def run_job(job: JobDirectory, body: Callable[[], None], debug: bool = False) -> int:
    """Run ``body`` under RELION's contract: exactly one exit marker on every path.

    Returns the process exit code. A :class:`PupickError` becomes one line on stderr
    (run.err); any other exception one line too, plus its traceback in run.out, and on
    stderr as well with ``debug``.
    """
    marker = EXIT_FAILURE
    try:
        job.path.mkdir(parents=True, exist_ok=True)
        job.clear_markers()
    except OSError as exc:
        _error_line(f"pupick-relion: cannot use job directory {job.path}: {exc}")
        return RC_FAILURE
    try:
        with sigterm_as_exception():
            body()
        marker = EXIT_SUCCESS
    except AbortRequested as exc:
        marker = EXIT_ABORTED
        log.info("Aborted: %s", exc)
    except PupickError as exc:
        log.error("ERROR: %s", exc)
        _error_line(str(exc))
        if debug:
            traceback.print_exc(file=sys.stderr)
    except KeyboardInterrupt:
        log.error("ERROR: interrupted")
        _error_line("pupick-relion: interrupted")
    except Exception as exc:  # a bug: keep the traceback where a user can find it
        log.error("ERROR: unexpected %s: %s\n%s", type(exc).__name__, exc, traceback.format_exc().rstrip())
        hint = "" if debug else " (the traceback is in run.out; add parameter debug for it here)"
        _error_line(f"pupick-relion: unexpected {type(exc).__name__}: {one_line(str(exc))}{hint}")
        if debug:
            traceback.print_exc(file=sys.stderr)
    finally:
        if job.abort_requested() and marker == EXIT_FAILURE:
            marker = EXIT_ABORTED  # stopped on request, whatever the body raised on the way out
        try:
            job.finish(marker)
        except OSError as exc:
            _error_line(f"pupick-relion: cannot write {job.marker(marker)}: {exc}")
            return RC_FAILURE
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
    return {EXIT_SUCCESS: RC_SUCCESS, EXIT_ABORTED: RC_ABORTED}.get(marker, RC_FAILURE)


def _error_line(text: str) -> None:
    print(one_line(text), file=sys.stderr, flush=True)
