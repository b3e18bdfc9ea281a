"""Small helpers shared by the benchmark scripts (standard library only).

* :func:`run_measured` runs one external command and reports its wall time and the peak
  resident memory of that command (including any child processes it waited for), taken
  from ``os.wait4`` so that each subprocess is measured on its own.
* :func:`thread_env` pins the thread count of BLAS/OpenMP/torch in a child environment.
* :func:`markdown_table` formats rows as a GitHub Markdown table.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class BenchmarkError(RuntimeError):
    """A step of a benchmark failed; the message says which and where its log is."""


@dataclass
class Measured:
    """One finished external command."""

    label: str
    argv: list[str]
    wall_s: float
    peak_rss_mib: float
    returncode: int
    log: Path

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def thread_env(threads: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with every common thread knob set."""
    env = dict(os.environ if base is None else base)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[key] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_measured(
    label: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> Measured:
    """Run ``argv`` with stdout+stderr into ``log``; time it and read its peak RSS.

    Peak RSS is ``ru_maxrss`` of the rusage that ``os.wait4`` returns for this child:
    the largest resident set of the child or of any descendant it waited for (not a sum
    over concurrent worker processes).
    """
    argv = [str(a) for a in argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write("$ " + shlex.join(argv) + "\n")
        out.flush()
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        except OSError as err:
            raise BenchmarkError(f"{label}: cannot start {argv[0]}: {err}") from err
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
    returncode = os.waitstatus_to_exitcode(status)
    proc.returncode = returncode  # already reaped; keep Popen from waiting again
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1.0 / (1024 * 1024) if sys.platform == "darwin" else 1.0 / 1024
    result = Measured(label, argv, wall, usage.ru_maxrss * scale, returncode, log)
    if check and returncode != 0:
        raise BenchmarkError(
            f"{label} failed (exit {returncode}); log: {log}\n--- last lines ---\n{result.log_tail()}"
        )
    return result


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; the first column is left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(
        [":" + "-" * (widths[0] + 1)] + ["-" * (w + 1) + ":" for w in widths[1:]]
    ) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])
