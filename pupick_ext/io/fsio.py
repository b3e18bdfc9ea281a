"""Atomic, verified file output: every file pupick writes appears whole or not at all.

A temporary ``.<name>.XXXX.part`` beside the target is written, flushed and fsynced, checked
(its size against what was written, or read back), and only then renamed onto the target. The
check matters on a full file system: a library writing through C stdio (numpy's ``tofile``, used
by cryosparc-tools' ``Dataset.save``) can lose its last buffer at ``fclose`` without reporting
it, so "no exception" does not mean "the file is whole". Any ``OSError`` on the way becomes one
:class:`~pupick_ext.errors.OutputError` line naming the file (``No space left on device``,
``Read-only file system``, ...), and nothing is left under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import OutputError, PupickError

#: reads a finished temporary file back; raises (any exception) if it is not whole
Verify = Callable[[Path], object]

_HINTS = {
    errno.ENOSPC: "the file system is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory",
    errno.EEXIST: "a file of that name is in the way",
}


def describe_os_error(exc: OSError) -> str:
    """``strerror`` plus what it means for an output, in one line (no path)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = exc.strerror or first or type(exc).__name__
    hint = _HINTS.get(exc.errno or 0)
    return f"{text} ({hint})" if hint and hint.lower() not in str(text).lower() else str(text)


def output_error(exc: OSError, path: str | Path, doing: str = "cannot write") -> OutputError:
    """An :class:`OutputError` for ``exc`` met while writing ``path``."""
    return OutputError(f"{doing}: {describe_os_error(exc)}", path)


def _mkdir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError("cannot create the directory: a file of that name is in the way",
                          directory) from None
    except OSError as exc:
        raise output_error(exc, directory, "cannot create the directory") from None


def check_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """Make sure ``path`` is (or can become) a writable directory; ``OutputError`` naming it if not.

    Called by the entry points before any work, so a wrong ``-o`` costs a second, not a training.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} exists and is not a directory", path)
    for parent in path.parents:  # a file somewhere above: mkdir's own message would be less clear
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot create the {what}: {parent} is a file, not a directory", path)
            break
    _mkdir(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".pupick-write-test.", dir=path)
        try:
            os.write(fd, b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise output_error(exc, path, f"{what} is not writable") from None
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """The parent of ``path`` is a writable directory and ``path`` itself is not a directory."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} is a directory", path)
    check_output_dir(path.parent, f"directory of the {what}")
    return path


def _content_check(tmp: Path) -> None:
    """What can be checked of any finished file by its kind: zip archives (torch files) have
    their central directory at the end, PNG pictures end with an IEND chunk."""
    size = tmp.stat().st_size
    with open(tmp, "rb") as handle:
        head = handle.read(8)
        if head.startswith(b"PK\x03\x04"):
            try:
                with zipfile.ZipFile(handle):
                    pass
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise ValueError(f"archive does not read back ({exc})") from None
        elif head == b"\x89PNG\r\n\x1a\n":
            handle.seek(max(0, size - 12))
            if b"IEND" not in handle.read(12):
                raise ValueError("PNG picture is cut short")


def _sync(tmp: Path) -> None:
    with open(tmp, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())


def _finish(tmp: Path, target: Path, verify: Verify | None) -> None:
    try:
        _sync(tmp)
    except OSError as exc:
        raise output_error(exc, target) from None
    try:
        _content_check(tmp)
        if verify is not None:
            verify(tmp)
    except PupickError as exc:
        raise OutputError(f"the written file does not read back ({exc.problem}); is the file system full?",
                          target) from None
    except OSError as exc:
        raise output_error(exc, target) from None
    except Exception as exc:  # noqa: BLE001 - whatever a reader raises, the file is not whole
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise OutputError(f"the written file does not read back ({detail}); is the file system full?",
                          target) from None


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | Path],
                 verify: Sequence[Verify | None] | None = None) -> Iterator[list[Path]]:
    """Temporary paths for a set of files that belong together (``particles.cs`` + ``.csg``).

    When the block succeeds every file is fsynced and checked (``verify[i]`` reads file i back),
    then all are renamed into place. If anything fails, no temporary file remains and none of
    the set is left under its final name (a file already renamed is removed again), so a reader
    never finds one half of a set.
    """
    targets = [Path(p) for p in paths]
    checks = list(verify) if verify is not None else [None] * len(targets)
    if len(checks) != len(targets):
        raise ValueError("one verify entry per path")
    tmps: list[Path] = []
    placed: list[Path] = []
    try:
        for target in targets:
            _mkdir(target.parent)
            if target.is_dir():
                raise OutputError("cannot write: a directory of that name is in the way", target)
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            except OSError as exc:
                raise output_error(exc, target) from None
            os.close(fd)
            tmps.append(Path(tmp_name))
        try:
            yield tmps
        except OSError as exc:  # the writer itself reported the failure (ENOSPC, EIO, ...)
            raise output_error(exc, targets[0]) from None
        for tmp, target, check in zip(tmps, targets, checks, strict=True):
            _finish(tmp, target, check)
        for tmp, target in zip(tmps, targets, strict=True):
            try:
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except OSError as exc:
                raise output_error(exc, target) from None
            placed.append(target)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for target in placed:  # half a set under final names would look finished
            with contextlib.suppress(OSError):
                target.unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, verify: Verify | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Before the rename the file is fsynced and checked: by ``verify(tmp)`` (a reader that raises
    if the file is not whole) and, for zip archives and PNG pictures, by its structure. On an
    exception the temporary file is removed and ``path`` keeps its previous content, so a crash
    or a full disk never leaves a torn file behind. ``OSError`` becomes :class:`OutputError`.
    """
    with atomic_paths([path], [verify]) as (tmp,):
        yield tmp


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically; the size on disk is checked before the rename."""
    if not isinstance(data, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"write_atomic writes str or bytes, not {type(data).__name__}")
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)

    def same_size(tmp: Path) -> None:
        size = tmp.stat().st_size
        if size != len(raw):
            raise ValueError(f"{size} of {len(raw)} bytes on disk")

    with atomic_path(path, verify=same_size) as tmp:
        tmp.write_bytes(raw)
    return Path(path)
