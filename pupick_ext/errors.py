"""pupick's exception hierarchy: every error a user can cause names the file and the problem.

Entry points (CLI, RELION and cryoSPARC wrappers) turn a :class:`PupickError` into one
line on stderr and a non-zero exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class PupickError(Exception):
    """Base class of every error pupick raises on purpose."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(PupickError):
    """A micrograph, coordinate or STAR file cannot be used (missing, malformed, invalid)."""


class SettingsError(PupickError):
    """A setting is out of range or settings contradict each other."""


class ModelError(PupickError):
    """A model file is corrupt, unsafe, or from an incompatible version."""


class AbortRequested(PupickError):
    """The host asked the job to stop (e.g. RELION_JOB_ABORT_NOW); raised between micrographs."""


class OutputError(PupickError):
    """An output cannot be written: the disk is full, the place is read-only, not a directory, or
    the written file does not read back (it is then removed, never left under its final name)."""


def first_line(error: BaseException | str, limit: int | None = None) -> str:
    """The first line of an error's text, at most ``limit`` characters: what a one-line report shows.

    Messages from libraries can run over many lines (a traceback, a dump); hosts report one.
    An exception without text gives its type name, an empty string gives ''.
    """
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    line = text.splitlines()[0]
    return line[:limit] if limit is not None else line
