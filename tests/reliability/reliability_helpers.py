"""Shared by the reliability tests: the four entry points run in-process, and the corpus packaged
for each host (a RELION coordinate node, cryoSPARC ``.cs`` datasets).

Kept out of conftest.py so test modules can import it by a unique name.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

HOSTS = ("pupick", "relion", "cryosparc_offline", "cryosparc_live")
#: fast engine settings for the few trainings the tests need (2 shared cores)
TRAIN_FAST = {"epochs": "1", "steps": "2"}


@dataclass
class Run:
    """What one entry-point run left: exit status, captured text, and where its outputs are."""

    rc: int
    out: str
    err: str
    outdir: Path
    extra: dict = field(default_factory=dict)

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err


@contextlib.contextmanager
def in_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """stdout/stderr into strings; logging handlers an entry point adds are removed afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)


def run_pupick(args: Sequence[str], cwd: Path, outdir: Path) -> Run:
    """``pupick <args>`` in-process (click's CliRunner), from ``cwd``."""
    from click.testing import CliRunner

    from pupick_ext.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with in_directory(cwd):
            try:
                runner = CliRunner(mix_stderr=False)  # click < 8.2
            except TypeError:
                runner = CliRunner()
            result = runner.invoke(main, [str(a) for a in args], catch_exceptions=True)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        err += "".join(traceback.format_exception(result.exception))  # an escaped exception is a bug
    return Run(result.exit_code, result.stdout, err, outdir)


def run_relion(args: Sequence[str], cwd: Path, job: str) -> Run:
    """``pupick-relion --o <job> <args>`` in-process, from the project directory ``cwd``."""
    from relion_wrapper import cli

    with in_directory(cwd), captured() as (out, err):
        rc = cli.main(["--o", job, *map(str, args)])
    return Run(rc, out.getvalue(), err.getvalue(), cwd / job)


def run_cryosparc(args: Sequence[str], cwd: Path, outdir: Path, env: dict[str, str] | None = None) -> Run:
    """``pupick-cryosparc <args>`` in-process (``env`` is set for the call only)."""
    from cryosparc_wrapper.cli import main

    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with in_directory(cwd), captured() as (out, err):
            rc = main([str(a) for a in args])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Run(rc, out.getvalue(), err.getvalue(), outdir)


# ------------------------------------------------------------------ files
def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def leftovers(root: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (``.<name>.XXXX.part``)."""
    return [p for p in files_under(root) if p.name.endswith(".part")]


def coordinate_files(root: Path) -> list[Path]:
    """Finished coordinate files (what a reader or RELION would take as outputs)."""
    return [
        p
        for p in files_under(root)
        if p.suffix in (".star", ".txt", ".box")
        and not p.name.startswith(".")
        and p.name not in ("RELION_OUTPUT_NODES.star", "autopick.star")
        and not p.name.startswith("coords_suffix")
    ]


def snapshot(root: Path, skip: Sequence[str] = ()) -> dict[str, bytes]:
    """Relative path -> bytes of every finished file under ``root`` (``skip``: name suffixes/names)."""
    out = {}
    for path in files_under(root):
        rel = str(path.relative_to(root))
        if path.name.endswith(".part") or any(rel.endswith(s) or path.name == s for s in skip):
            continue
        out[rel] = path.read_bytes()
    return out


def mrc_shape(path: Path) -> tuple[int, int]:
    from pupick_ext import PupickError, read_header

    try:
        return read_header(path)[0]
    except PupickError:  # a damaged file: cryoSPARC would still carry its shape from motion correction
        return (256, 256)


# ------------------------------------------------------------------ RELION packaging
def relion_labels(
    project: Path,
    job: str,
    rows: Sequence[tuple[str, float, float]],
    micrograph_names: dict[str, str],
    drop_y: bool = False,
) -> str:
    """A RELION 4.0 Manual picking node (``manualpick.star`` + one coordinate STAR per micrograph).

    ``micrograph_names`` maps a label's micrograph name to the RELION micrograph name; labels on
    names it lacks get ``Micrographs/<name>.mrc`` (a micrograph the job was not given).
    """
    by_mic: dict[str, list[tuple[float, float]]] = {name: [] for name in micrograph_names}
    for name, x, y in rows:
        by_mic.setdefault(name, []).append((x, y))
    index = []
    for name, xy in by_mic.items():
        relion_name = micrograph_names.get(name, f"Micrographs/{name}.mrc")
        coords = f"{job}Micrographs/{name}_manualpick.star"
        table = {"rlnCoordinateX": [p[0] for p in xy]}
        if not drop_y:
            table["rlnCoordinateY"] = [p[1] for p in xy]
        table["rlnClassNumber"] = [0] * len(xy)
        table["rlnAnglePsi"] = [-999.0] * len(xy)
        target = project / coords
        target.parent.mkdir(parents=True, exist_ok=True)
        if xy:
            starfile.write({"": pd.DataFrame(table)}, target, overwrite=True)
        else:  # what RELION writes for a micrograph whose picks were all deleted
            target.write_text(
                "\n# version 30001\n\ndata_\n\nloop_ \n"
                + "".join(f"_{c} #{i} \n" for i, c in enumerate(table, start=1))
                + " \n"
            )
        index.append((relion_name, coords))
    node = project / job / "manualpick.star"
    text = "\n# version 30001\n\ndata_coordinate_files\n\nloop_ \n_rlnMicrographName #1 \n"
    text += "_rlnMicrographCoordinates #2 \n" + "".join(f'"{m}" "{c}" \n' for m, c in index) + " \n"
    node.write_text(text, encoding="utf-8")
    return f"{job}manualpick.star"


# ------------------------------------------------------------------ cryoSPARC packaging
def exposures_dataset(project: Path, names: Sequence[str], pixel_sizes: Sequence[float]):
    """A Patch CTF-like exposures dataset for micrographs ``names`` (paths relative to ``project``)."""
    from cryosparc.dataset import Dataset
    from cryosparc_fake.scene import EXPOSURE_FIELDS

    dset = Dataset.allocate(len(names), EXPOSURE_FIELDS)
    dset["micrograph_blob/path"] = np.array(list(names), dtype=object)
    dset["micrograph_blob/shape"] = np.array([mrc_shape(project / n) for n in names], dtype=np.uint32)
    dset["micrograph_blob/psize_A"] = np.array(pixel_sizes, dtype=np.float32)
    dset["micrograph_blob/format"] = np.array(["MRC"] * len(names), dtype=object)
    dset["mscope_params/exp_group_id"] = np.uint32(1)
    dset["ctf/exp_group_id"] = np.uint32(1)
    return dset


def particles_dataset(exposures, rows: Sequence[tuple[str, float, float]], drop_y: bool = False):
    """A Manual Picker-like particles dataset; labels on unknown micrographs get a foreign uid."""
    from cryosparc.dataset import Dataset
    from cryosparc_fake.scene import MANUAL_PICK_FIELDS

    from pupick_ext import micrograph_stem

    paths = [str(p) for p in exposures["micrograph_blob/path"]]
    index = {micrograph_stem(p): i for i, p in enumerate(paths)}
    fields = [f for f in MANUAL_PICK_FIELDS if not (drop_y and f[0] == "location/center_y_frac")]
    dset = Dataset.allocate(len(rows), fields)
    if not rows:
        return dset
    uids, mpaths, shapes = [], [], []
    for name, _, _ in rows:
        if name in index:
            i = index[name]
            uids.append(int(exposures["uid"][i]))
            mpaths.append(paths[i])
            shapes.append(tuple(int(v) for v in exposures["micrograph_blob/shape"][i]))
        else:
            uids.append(987654321 + len(uids))
            mpaths.append(f"J99/motioncorrected/{name}.mrc")
            shapes.append((256, 256))
    shape = np.array(shapes, dtype=np.float64)
    dset["location/micrograph_uid"] = np.array(uids, dtype=np.uint64)
    dset["location/micrograph_path"] = np.array(mpaths, dtype=object)
    dset["location/micrograph_shape"] = shape.astype(np.uint32)
    dset["location/micrograph_psize_A"] = np.float32(1.5)
    dset["location/center_x_frac"] = (np.array([r[1] for r in rows]) / shape[:, 1]).astype(np.float32)
    if not drop_y:
        dset["location/center_y_frac"] = (np.array([r[2] for r in rows]) / shape[:, 0]).astype(np.float32)
    return dset


def python_env() -> dict[str, str]:
    """Environment for subprocesses: one thread per library, unbuffered output, this interpreter's path."""
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONWARNINGS="ignore",
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )


# ------------------------------------------------------------------ children to kill
def entry_point_child(kind: str, argv: list[str], cwd: str, log_path: str) -> None:
    """Body of a forked child: run one entry point (``pupick`` or ``pupick-relion``) as its main.

    Used through a ``forkserver`` context whose server imported pupick once, so each child starts
    in milliseconds and is a real process that SIGKILL ends at an arbitrary instruction.
    """
    os.chdir(cwd)
    with (
        open(log_path, "w", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        try:
            if kind == "pupick":
                from pupick_ext.cli import main

                main(args=argv, prog_name="pupick", standalone_mode=True)
                code = 0
            else:
                from relion_wrapper.cli import main as relion_main

                code = relion_main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        log.flush()
    os._exit(code)


def forkserver_context():
    """A multiprocessing context whose server preloads the engine (torch included) once."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        [
            "reliability_helpers",
            "pupick_ext.cli",
            "pupick_ext.api",
            "relion_wrapper.cli",
            "relion_wrapper.workflow",
        ]
    )
    return ctx
