"""pupick-relion: pupick as a RELION External job (RELION 3.1, 4.0 and 5.0).

In RELION, add an External job, set "External executable" to pupick-relion, connect
"Input micrographs" (CtfFind or MotionCorr output) and, to train, "Input coordinates"
(Manual picking) or "Input particles", and add parameters such as

    diameter 150          particle diameter in A (needed to train)
    mode     train+extract | train | extract
    model    External/job007/model.pupick   (mode extract)

RELION then runs, from the project directory:

    pupick-relion --o External/job012/ --in_mics CtfFind/job003/micrographs_ctf.star \\
        --in_coords ManualPick/job004/coords_suffix_manualpick.star --diameter 150 --j 4

The job writes one coordinate STAR file per micrograph, the coordinate node (3.1:
coords_suffix_pupick.star, 4.0/5.0: autopick.star), RELION_OUTPUT_NODES.star, PNG
pictures, and exactly one RELION_JOB_EXIT_* marker. Arguments it does not use are
logged and ignored. See docs/relion.md.

Run by RELION's queue script as several processes (``srun``, ``mpirun`` or ``torchrun``),
the ranks share the micrographs; rank 0 alone writes the index, the output nodes and the
exit marker, after every rank has reported (docs/relion.md, "Many micrographs").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from .choices import DEVICES, MODES

log = logging.getLogger(__name__)

#: The job's own value options; the engine's come from the parameter table (see _labels).
#: RELION may pass any of them with an empty value (``--threshold --j 1``).
_VALUE_OPTIONS: dict[str, str] = {
    "mode": f"{' | '.join(MODES)} (default train+extract)",
    "model": "trained model file (required with mode extract)",
    "device": f"{' | '.join(DEVICES)} (default auto)",
    "gpu": "GPU number to use (implies cuda)",
    "suffix": "coordinate file suffix (default pupick: <micrograph>_pupick.star)",
    "relion_version": "3.1, 4 or 5: force the output layout (default: detected)",
    "pictures": "how many micrographs to draw with their picks (default 3)",
}


@functools.lru_cache(maxsize=1)
def _table_labels() -> dict[str, str]:
    """Every label of the parameter table the job takes (old spellings too) -> its help line."""
    from .params import relion_parameters

    labels: dict[str, str] = {}
    for p in relion_parameters():
        default = "" if p.default is None else f" (default {p.default})"
        labels[p.name] = (p.help + default).replace("%", "%%")  # argparse formats help with %
        labels.update({alias: f"same as {p.name}" for alias in p.spellings("relion")[1:]})
    return labels


#: A pupick command-line flag in an engine message (``--expected-particles``).
_ENGINE_FLAG = re.compile(r"--([a-z][a-z0-9]*(?:-[a-z0-9]+)+)")


class _RelionWording(logging.Filter):
    """Engine messages name ``pupick``'s flags; in RELION's job window they read as parameter labels.

    ``set --expected-particles if you know better`` becomes ``set parameter expected_particles ...``;
    flags the External job has no label for are left as they are.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        labels = _table_labels()

        def label(match: re.Match[str]) -> str:
            name = match.group(1).replace("-", "_")
            known = name in _VALUE_OPTIONS or name in labels
            return f"parameter {name}" if known else match.group(0)

        reworded = _ENGINE_FLAG.sub(label, text)
        if reworded != text:
            record.msg, record.args = reworded, ()
        return True


class _ArgumentError(Exception):
    """argparse found a malformed command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgumentError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command line RELION's External job produces, plus pupick's parameters."""
    parser = _Parser(
        prog="pupick-relion",
        description=(__doc__ or "").split("\n\n", 1)[0],
        epilog="Unknown --options (other RELION inputs, extra parameters) are logged and ignored.",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = parser.add_argument_group("RELION inputs")
    io.add_argument("--o", required=True, metavar="JOBDIR", help="job directory (RELION passes it)")
    io.add_argument("--in_mics", metavar="STAR", help="micrographs STAR file")
    io.add_argument(
        "--in_coords", metavar="STAR", help="labelled coordinates (coords_suffix_*.star or manualpick.star)"
    )
    io.add_argument("--in_parts", metavar="STAR", help="particles STAR file to train on")
    io.add_argument("--j", metavar="N", help="threads (RELION's 'Number of threads')")
    params = parser.add_argument_group("pupick parameters (RELION: Param label / Param value)")
    for name, text in {**_VALUE_OPTIONS, **_table_labels()}.items():
        params.add_argument(f"--{name}", nargs="?", const="", default=None, metavar="VALUE", help=text)
    params.add_argument(
        "--debug",
        nargs="?",
        const="yes",
        default=None,
        metavar="YES|NO",
        help="print tracebacks to run.err too",
    )
    return parser


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse RELION's command line; returns the namespace and the arguments we ignore."""
    return build_parser().parse_known_args(list(argv))


def _job_dir_from(argv: Sequence[str]) -> str | None:
    """The value of ``--o`` even when the rest of the command line is malformed."""
    items = list(argv)
    for i, item in enumerate(items):
        if item == "--o" and i + 1 < len(items) and not items[i + 1].startswith("--"):
            return items[i + 1]
        if item.startswith("--o="):
            return item[4:]
    return None


def _debug_from(argv: Sequence[str]) -> bool:
    """Whether ``--debug`` is on (``--debug``, ``--debug Yes``), read before full parsing."""
    items = list(argv)
    if "--debug" not in items:
        return False
    i = items.index("--debug")
    value = items[i + 1].strip().lower() if i + 1 < len(items) and not items[i + 1].startswith("--") else ""
    return value not in ("no", "n", "false", "0", "off")


@contextlib.contextmanager
def _logging_to_stdout(debug: bool, rank_label: str = "") -> Iterator[None]:
    """run.out gets every log line at once, warnings too (run.err keeps the one error line)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {rank_label}%(message)s", "%H:%M:%S"))
    handler.addFilter(_RelionWording())
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        handler.flush()
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pupick-relion``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    job_dir = _job_dir_from(argv)
    if job_dir is None:
        print(
            "pupick-relion: missing --o <job directory> (RELION passes it; see pupick-relion --help)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    debug = _debug_from(argv)
    try:
        from pupick_ext import rank_info

        ranks = rank_info()
    except Exception as exc:  # a malformed rank environment, or no engine: rank 0's rules apply
        ranks = None
        early = f"pupick-relion: cannot start ({type(exc).__name__}: {exc})"
    else:
        early = ""
    label = f"[rank {ranks.rank}/{ranks.world_size}] " if ranks is not None and ranks.active else ""
    with _logging_to_stdout(debug, label):
        if ranks is None:
            return _fail_early(job_dir, early)
        return _run(argv, job_dir, debug, ranks)


def _run(argv: list[str], job_dir: str, debug: bool, ranks: Any = None) -> int:
    """Parse, then run the job under RELION's exit-marker contract (rank 0; the others report to it)."""
    try:
        from pupick_ext import RankInfo, SettingsError

        from . import workflow
        from .job import JobDirectory, run_job
        from .params import params_from_args

        ranks = ranks if ranks is not None else RankInfo()
        job = JobDirectory(job_dir)
        job.path.mkdir(parents=True, exist_ok=True)
    except Exception as exc:  # the engine cannot even be imported: still tell RELION
        return _fail_early(job_dir, f"pupick-relion: cannot start ({type(exc).__name__}: {exc})")

    def body() -> None:
        log.info("pupick-relion %s", " ".join(argv))
        try:
            args, ignored = parse_args(argv)
        except _ArgumentError as exc:
            raise SettingsError(f"bad command line: {exc}") from None
        params = params_from_args(args)
        if ignored:
            log.info("Ignoring arguments pupick-relion does not use: %s", " ".join(ignored))
        inputs = workflow.JobInputs(
            job_dir=args.o,
            in_mics=args.in_mics,
            in_coords=args.in_coords,
            in_parts=args.in_parts,
            argv=argv,
            ignored=ignored,
        )
        workflow.run(inputs, params, job, ranks=ranks)
        log.info("Done.")

    if ranks.is_main:
        return run_job(job, body, debug=debug)
    return _run_other_rank(body, debug)


def _run_other_rank(body: Any, debug: bool) -> int:
    """A rank other than 0: do its share; never touch RELION's exit markers (rank 0 owns them)."""
    import traceback

    from pupick_ext import AbortRequested, PupickError

    try:
        body()
        return 0
    except AbortRequested as exc:
        log.info("Aborted: %s", exc)
        return 2
    except PupickError as exc:
        log.error("ERROR: %s", exc)
    except Exception as exc:  # a bug: keep the traceback in run.out
        log.error("ERROR: unexpected %s: %s\n%s", type(exc).__name__, exc, traceback.format_exc().rstrip())
    if debug:
        traceback.print_exc(file=sys.stderr)
    return 1


def _fail_early(job_dir: str, message: str) -> int:
    """Write the failure marker with nothing but the standard library (so not even pupick_ext.first_line:
    this runs when the engine cannot be imported)."""
    from pathlib import Path

    log.error("ERROR: %s", message)
    print(message.splitlines()[0] if message else "pupick-relion failed", file=sys.stderr, flush=True)
    try:
        Path(job_dir).mkdir(parents=True, exist_ok=True)
        (Path(job_dir) / "RELION_JOB_EXIT_FAILURE").touch()
    except OSError:
        pass
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
