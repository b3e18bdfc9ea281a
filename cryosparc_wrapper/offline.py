"""Offline mode: exported ``.cs`` files in, a particles ``.cs`` + ``.csg`` and RELION STAR out.

No cryoSPARC connection is needed. Micrograph paths in the exposures ``.cs`` are relative to
the cryoSPARC project directory (``project_dir``). The outputs::

    <out>/particles.cs                 cryoSPARC particle dataset (location + pick_stats)
    <out>/particles.csg                result group for cryoSPARC's Import Result Group job
    <out>/coordinates/<mic>_pupick.star RELION coordinate STAR per micrograph (same picks)
    <out>/training/model.pupick         the model (train modes)
    <out>/pupick_cryosparc.json         settings, versions, command line
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from cryosparc.dataset import Dataset

from pupick_ext import (
    InputError,
    Picks,
    atomic_paths,
    check_output_dir,
    write_coordinate_star,
    write_run_record,
)

from .fields import PARTICLE_SLOTS, Exposure, exposures_from_dataset, particles_to_picks, picks_to_particles
from .options import PickOptions
from .pipeline import check_shapes, run_pipeline

logger = logging.getLogger(__name__)

STAR_SUFFIX = "_pupick.star"
#: the run record beside the outputs (settings, versions, command line)
RUN_RECORD = "pupick_cryosparc.json"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class OfflineResult:
    """Paths written by :func:`run_offline` (``particles_cs``/``csg``/``star_dir`` None in train mode)."""

    out_dir: Path
    particles_cs: Path | None
    csg: Path | None
    star_dir: Path | None
    n_particles: int
    model_path: Path | None


class _LogReporter:
    def __init__(self) -> None:
        self._last = -1

    def progress(self, done: int, total: int, message: str) -> None:
        percent = int(100 * done / max(total, 1))
        if percent // 10 != self._last // 10 or done == total:
            logger.info("[%3d%%] %s", percent, message)
        self._last = percent

    def info(self, text: str) -> None:
        self._last = -1
        logger.info("%s", text)

    def picture(self, png: Path, text: str) -> None:
        logger.info("%s: %s", text, png)

    def warn(self, text: str) -> None:
        self._last = -1
        logger.warning("%s", text)


def load_datasets(paths: Sequence[str | Path], what: str) -> Dataset:
    """Load one or more ``.cs`` files; several are joined on ``uid`` (a result and its passthrough).

    Raises:
        InputError: a file is missing or not a cryoSPARC dataset, or the files share no rows.
    """
    if not paths:
        raise InputError(f"no {what} .cs file given")
    datasets = []
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"{what} file not found", path)
        try:
            datasets.append(Dataset.load(path))
        except Exception as err:  # noqa: BLE001 - any failure to parse means "not a .cs file"
            raise InputError(f"not a cryoSPARC .cs dataset ({type(err).__name__}: {err})", path) from None
    dset = datasets[0] if len(datasets) == 1 else datasets[0].innerjoin(*datasets[1:])
    if len(datasets) > 1 and len(dset) == 0:
        raise InputError(
            f"the {what} files share no uid; give a result and its own passthrough file", Path(paths[0])
        )
    return dset


def local_paths(exposures: Sequence[Exposure], project_dir: Path) -> dict[str, Path]:
    """Exposure name -> micrograph file under ``project_dir``.

    Raises:
        InputError: a micrograph is not there.
    """
    out = {}
    for exposure in exposures:
        path = Path(exposure.path)
        path = path if path.is_absolute() else project_dir / path
        if not path.is_file():
            raise InputError(
                "micrograph not found; give the cryoSPARC project directory with --project-dir", path
            )
        out[exposure.name] = path
    return out


def csg_text(cs_name: str, n: int, title: str, tools_version: str) -> str:
    """A cryoSPARC result-group (``.csg``) file for a particle ``.cs`` next to it.

    Metafile paths are relative to the ``.csg`` (``>`` prefix); one result per slot.
    """
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    lines = [
        f"created: {created}",
        "group:",
        "  description: Particles picked by pupick (positive-unlabeled CNN picker)",
        "  name: particles",
        f"  title: {json.dumps(title)}",
        "  type: particle",
        "results:",
    ]
    for slot in PARTICLE_SLOTS:
        lines += [
            f"  {slot}:",
            f"    metafile: '>{cs_name}'",
            f"    num_items: {n}",
            f"    type: particle.{slot}",
        ]
    lines.append(f"version: v{tools_version}")
    return "\n".join(lines) + "\n"


def run_offline(
    exposures_cs: Sequence[str | Path],
    particles_cs: Sequence[str | Path] | None,
    project_dir: str | Path,
    out_dir: str | Path,
    options: PickOptions,
    title: str = "pupick particles",
) -> OfflineResult:
    """Pick particles on micrographs described by exported cryoSPARC ``.cs`` files.

    Args:
        exposures_cs: exposures ``.cs`` (e.g. ``J12_exposures_accepted_exported.cs``); several
            files are joined on ``uid``.
        particles_cs: labelled particles ``.cs`` (Manual Picker or selected 2D classes; needed
            to train); several files are joined on ``uid``.
        project_dir: the cryoSPARC project directory the micrograph paths are relative to.
        out_dir: where outputs go (inside the project directory for Import Result Group).
        options: mode and parameters.
        title: title of the result group.

    Returns:
        The written paths and the number of particles.

    Raises:
        PupickError: unreadable inputs, missing micrographs, bad settings, engine failures.
            Particles ``.cs``/``.csg`` are written only after every micrograph is picked.
    """
    project_dir, out_dir = Path(project_dir), Path(out_dir)
    if not project_dir.is_dir():
        raise InputError("project directory not found", project_dir)
    check_output_dir(out_dir, "--out directory")  # a wrong --out fails now, not after training
    exposures = exposures_from_dataset(load_datasets(exposures_cs, "exposures"), origin=str(exposures_cs[0]))
    local = local_paths(exposures, project_dir)
    exposures = check_shapes(exposures, local)
    labels: Picks | None = None
    if particles_cs:
        labels = particles_to_picks(
            load_datasets(particles_cs, "particles"),
            exposures,
            origin=str(particles_cs[0]),
            flip_y=options.flip_y,
        )
    elif options.trains:
        raise InputError("training needs labelled particles: give --particles")
    logger.info("%d micrographs from %s", len(exposures), ", ".join(map(str, exposures_cs)))
    _write_settings(out_dir, options, exposures_cs, particles_cs, project_dir)

    star_dir = out_dir / "coordinates" if options.extracts else None

    def write_star(exposure: Exposure, picks: Picks) -> None:
        assert star_dir is not None
        write_coordinate_star(picks, star_dir / f"{exposure.name}{STAR_SUFFIX}")

    result = run_pipeline(exposures, local, labels, options, out_dir, _LogReporter(), on_picks=write_star)
    if not options.extracts:
        return OfflineResult(out_dir, None, None, None, 0, result.model_path)

    dset = picks_to_particles(
        result.picks, min_dist_A=(result.particle_diameter or 0.0) / 2, flip_y=options.flip_y
    )
    cs_path, csg_path = out_dir / "particles.cs", out_dir / "particles.csg"
    csg = csg_text(cs_path.name, len(dset), title, package_version("cryosparc-tools"))
    save_particles(dset, cs_path, csg_path, csg)
    logger.info(
        "wrote %d particles to %s and %s; RELION coordinates in %s", len(dset), cs_path, csg_path, star_dir
    )
    return OfflineResult(out_dir, cs_path, csg_path, star_dir, len(dset), result.model_path)


def dataset_reads_back(expected: Dataset) -> Callable[[Path], None]:
    """A check for a just-saved ``.cs`` file: it loads, with every row and field of ``expected``.

    ``Dataset.save`` writes through numpy's ``tofile`` (C stdio), which on a full file system can
    lose its last buffer at ``fclose`` without an error: the file is then short, and only reading
    it back tells.
    """
    n, fields = len(expected), set(expected.fields())

    def check(tmp: Path) -> None:
        try:
            loaded = Dataset.load(tmp)
        except Exception as err:  # noqa: BLE001 - any failure to load means the file is not whole
            raise ValueError(f"Dataset.load fails: {type(err).__name__}") from None
        if len(loaded) != n or set(loaded.fields()) != fields:
            raise ValueError(f"{len(loaded)} of {n} rows")

    return check


def save_particles(dset: Dataset, cs_path: Path, csg_path: Path, csg: str) -> None:
    """``particles.cs`` and its ``.csg``, written as one set: both verified, then both renamed.

    If anything fails (a full disk, a read-only mount), neither file is left under its final
    name: a ``.cs`` without its ``.csg`` (or a short ``.cs``) would look like a finished import.
    """
    raw = csg.encode("utf-8")

    def csg_whole(tmp: Path) -> None:
        if tmp.read_bytes() != raw:
            raise ValueError("result group file differs from what was written")

    with atomic_paths([cs_path, csg_path], [dataset_reads_back(dset), csg_whole]) as (cs_tmp, csg_tmp):
        dset.save(cs_tmp)
        csg_tmp.write_bytes(raw)


def _write_settings(
    out_dir: Path,
    options: PickOptions,
    exposures_cs: Sequence[str | Path],
    particles_cs: Sequence[str | Path] | None,
    project_dir: Path,
) -> None:
    write_settings_record(
        out_dir,
        {
            "mode": "offline",
            "options": options.to_dict(),
            "exposures": [str(p) for p in exposures_cs],
            "particles": [str(p) for p in particles_cs or []],
            "project_dir": str(project_dir),
        },
    )


def write_settings_record(directory: Path, fields: dict[str, Any]) -> None:
    """The run record (``pupick_cryosparc.json``): ``fields``, versions and the command line, never
    credentials."""
    versions = {"pupick": package_version("pupick"), "cryosparc-tools": package_version("cryosparc-tools")}
    write_run_record(directory / RUN_RECORD, {**fields, "versions": versions, "command": sys.argv})
