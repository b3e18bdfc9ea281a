"""Reading RELION's micrograph, coordinate-index and particle STAR files (with starfile).

Names are kept exactly as RELION wrote them (``_rlnMicrographName``): the coordinate
path rule and the 4.0+ index work on those strings, not on normalised paths.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import starfile

from pupick_ext import InputError, MicrographEntry, Picks, first_line, read_coordinates

from .nodes import coordinate_path, decompose_pipeline_name, without_extension

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelionMicrograph:
    """One row of a micrographs STAR file: RELION's name for it and the engine's entry."""

    relion_name: str
    entry: MicrographEntry


def _read_star(path: Path) -> dict[str, pd.DataFrame | dict]:
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnMicrographName", "rlnImageName"])
    except Exception as exc:  # starfile raises assorted parser errors; name the file instead
        raise InputError(
            first_line(f"not a readable STAR file ({type(exc).__name__}: {exc})"), path
        ) from None
    if not blocks:
        raise InputError("holds no STAR data blocks", path)
    for name, table in blocks.items():
        if isinstance(table, pd.DataFrame) and table.columns.duplicated().any():
            twice = table.columns[table.columns.duplicated()][0]
            raise InputError(f"data_{name} has the column _{twice} twice", path)
    return blocks


def _table(blocks: Mapping[str, pd.DataFrame | dict], wanted: str, path: Path, needs: str) -> pd.DataFrame:
    """The loop named ``wanted``, else the single loop that has column ``needs``."""
    table = blocks.get(wanted)
    if isinstance(table, dict):
        table = pd.DataFrame([table])
    if isinstance(table, pd.DataFrame) and needs in table.columns:
        return table
    candidates = [t for t in blocks.values() if isinstance(t, pd.DataFrame) and needs in t.columns]
    if len(candidates) == 1:
        return candidates[0]
    single = [pd.DataFrame([t]) for t in blocks.values() if isinstance(t, dict) and needs in t]
    if len(single) == 1:
        return single[0]
    raise InputError(f"has no data_{wanted} table with column _{needs}", path)


def _numbers(values: pd.Series, column: str, path: Path, kind: type = float) -> np.ndarray:
    """A column as numbers; InputError naming the file and the column when a value is not one."""
    try:
        out: np.ndarray = np.array([kind(float(v)) if kind is int else float(v) for v in values], dtype=kind)
    except (ValueError, TypeError, OverflowError):
        bad = next((v for v in values if not _is_number(v, kind)), "?")
        raise InputError(f"column _{column} holds {str(bad)[:40]!r}, not a number", path) from None
    return out


def _is_number(value: object, kind: type) -> bool:
    try:
        kind(float(value)) if kind is int else float(value)  # type: ignore[arg-type]
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _optics_pixel_sizes(
    blocks: Mapping[str, pd.DataFrame | dict], column: str, path: Path
) -> dict[int, float]:
    optics = blocks.get("optics")
    if isinstance(optics, dict):
        optics = pd.DataFrame([optics])
    if not isinstance(optics, pd.DataFrame) or column not in optics.columns or "rlnOpticsGroup" not in optics:
        return {}
    groups = _numbers(optics["rlnOpticsGroup"], "rlnOpticsGroup", path, int)
    return dict(zip(groups.tolist(), _numbers(optics[column], column, path).tolist(), strict=True))


def _pixel_sizes(table: pd.DataFrame, blocks: Mapping, optics_column: str, path: Path) -> np.ndarray:
    """Per-row pixel size (A/px) from the optics table (3.1+) or magnification/detector pixel (3.0)."""
    sizes = np.full(len(table), np.nan)
    by_group = _optics_pixel_sizes(blocks, optics_column, path)
    if by_group and "rlnOpticsGroup" in table.columns:
        groups = _numbers(table["rlnOpticsGroup"], "rlnOpticsGroup", path, int)
        sizes = np.array([by_group.get(int(g), np.nan) for g in groups], dtype=float)
    elif {"rlnDetectorPixelSize", "rlnMagnification"} <= set(table.columns):
        with np.errstate(all="ignore"):
            sizes = (
                1e4
                * _numbers(table["rlnDetectorPixelSize"], "rlnDetectorPixelSize", path)
                / _numbers(table["rlnMagnification"], "rlnMagnification", path)
            )
    return sizes


def read_micrographs(path: str | Path) -> list[RelionMicrograph]:
    """The micrographs of a RELION micrographs STAR file (3.0 or 3.1+), names as written."""
    path = Path(path)
    blocks = _read_star(path)
    table = _table(blocks, "micrographs", path, "rlnMicrographName")
    if table.empty:
        raise InputError("lists no micrographs", path)
    names = [str(n) for n in table["rlnMicrographName"]]
    sizes = _pixel_sizes(table, blocks, "rlnMicrographPixelSize", path)
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise InputError(f"lists micrograph {duplicate} more than once", path)
    _check_coordinate_paths(names, path)
    stems = [without_extension(PurePosixPath(n).name) for n in names]
    unique_stems = len(set(stems)) == len(stems)
    out = []
    for name, stem, size in zip(names, stems, sizes, strict=True):
        key = stem if unique_stems else without_extension(decompose_pipeline_name(name)[2]).strip("/")
        pixel = float(size) if np.isfinite(size) and size > 0 else None
        out.append(RelionMicrograph(name, MicrographEntry(Path(name), name=key, pixel_size=pixel)))
    return out


def _check_coordinate_paths(names: list[str], path: Path) -> None:
    """Every micrograph's coordinate file (RELION's path rule) must be its own and inside the job.

    The rule keeps the name after ``Stage/jobNNN/``: a name with ``..`` there would put the file
    outside the job directory, and two names that agree after ``jobNNN/`` would share one file
    (the second micrograph's picks would replace the first's).
    """
    seen: dict[str, str] = {}
    for name in names:
        rest = without_extension(decompose_pipeline_name(name)[2])
        normal = posixpath.normpath(f"job/{rest}_suffix.star")  # as nodes.coordinate_path joins them
        if not normal.startswith("job/"):
            raise InputError(
                f"micrograph name {name!r} would put its coordinate file outside the job directory "
                "(RELION names it after the part following Stage/jobNNN/)",
                path,
            )
        if normal in seen:
            raise InputError(
                f"micrographs {seen[normal]} and {name} would share one coordinate file "
                f"(<job>/{rest}_<suffix>.star): their picks could not be told apart; "
                "give them distinct names",
                path,
            )
        seen[normal] = name


def read_coordinate_index(path: str | Path) -> dict[str, str]:
    """micrograph name -> coordinate file, from a 4.0+ ``manualpick.star``/``autopick.star``."""
    path = Path(path)
    blocks = _read_star(path)
    table = _table(blocks, "coordinate_files", path, "rlnMicrographCoordinates")
    if "rlnMicrographName" not in table.columns:
        raise InputError("has no _rlnMicrographName column in data_coordinate_files", path)
    return {
        str(m): str(c)
        for m, c in zip(table["rlnMicrographName"], table["rlnMicrographCoordinates"], strict=True)
    }


def suffix_of_index(path: str | Path) -> str:
    """'manualpick' from '.../coords_suffix_manualpick.star'."""
    name = Path(path).name
    if not (name.startswith("coords_suffix_") and name.endswith(".star")):
        raise InputError("a RELION 3.1 coordinate node is named coords_suffix_<suffix>.star", path)
    return name[len("coords_suffix_") : -len(".star")]


def coordinate_files_for(in_coords: str, micrographs: list[RelionMicrograph]) -> dict[str, str]:
    """RELION micrograph name -> its labelled-coordinate file, for whichever layout ``in_coords`` has."""
    path = Path(in_coords)
    if path.name.startswith("coords_suffix_"):
        if not path.is_file():
            raise InputError("file not found", path)
        suffix = suffix_of_index(path)
        job_dir = str(PurePosixPath(in_coords).parent)
        return {m.relion_name: coordinate_path(job_dir, m.relion_name, suffix) for m in micrographs}
    return read_coordinate_index(path)


def read_labels(in_coords: str, micrographs: list[RelionMicrograph]) -> Picks:
    """Labelled particle positions for ``micrographs`` from a coordinate node (3.1 or 4.0+ layout)."""
    files = coordinate_files_for(in_coords, micrographs)
    by_name = _matcher(micrographs)
    tables = []
    for relion_name, coord_file in files.items():
        micrograph = by_name(relion_name)
        if micrograph is None:
            log.warning(
                "Labels for %s: that micrograph is not in the input micrographs; skipped", relion_name
            )
            continue
        if not Path(coord_file).is_file():
            continue  # RELION 3.1 writes a file only for micrographs someone picked on
        picks = read_coordinates(coord_file, fmt="star")
        tables.append(Picks.for_one(micrograph.entry.name, picks.x, picks.y, picks.score))
    return Picks.concat(tables)


def _matcher(micrographs: list[RelionMicrograph]):
    """A lookup from a micrograph name as another STAR file writes it to our micrograph."""
    exact = {m.relion_name: m for m in micrographs}
    normal = {str(PurePosixPath(m.relion_name)): m for m in micrographs}
    post = {decompose_pipeline_name(m.relion_name)[2]: m for m in micrographs}
    stems: dict[str, list[RelionMicrograph]] = {}
    for m in micrographs:
        stems.setdefault(without_extension(PurePosixPath(m.relion_name).name), []).append(m)

    def find(name: str) -> RelionMicrograph | None:
        for table, key in (
            (exact, name),
            (normal, str(PurePosixPath(name))),
            (post, decompose_pipeline_name(name)[2]),
        ):
            if key in table:
                return table[key]
        found = stems.get(without_extension(PurePosixPath(name).name), [])
        return found[0] if len(found) == 1 else None

    return find


def read_particle_labels(in_parts: str | Path, micrographs: list[RelionMicrograph]) -> Picks:
    """Particle centres from a particles STAR file, with RELION's origin shifts added back.

    The centre in micrograph pixels is ``coordinate - origin / micrograph pixel size``
    (preprocessing.cpp, re-centring on extraction: ``xcoord -= round(xoff)``).
    """
    path = Path(in_parts)
    blocks = _read_star(path)
    table = _table(blocks, "particles", path, "rlnCoordinateX")
    for column in ("rlnMicrographName", "rlnCoordinateY"):
        if column not in table.columns:
            raise InputError(f"has no _{column} column", path)
    x = _numbers(table["rlnCoordinateX"], "rlnCoordinateX", path)
    y = _numbers(table["rlnCoordinateY"], "rlnCoordinateY", path)
    find = _matcher(micrographs)
    owners = [find(str(n)) for n in table["rlnMicrographName"]]
    mic_pixel = np.array(
        [o.entry.pixel_size if o and o.entry.pixel_size else np.nan for o in owners], dtype=float
    )
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(table.columns):
        if np.isnan(mic_pixel[[o is not None for o in owners]]).any():
            raise InputError(
                "particles carry origin shifts in A but the micrographs' pixel size is unknown", path
            )
        x = x - _numbers(table["rlnOriginXAngst"], "rlnOriginXAngst", path) / mic_pixel
        y = y - _numbers(table["rlnOriginYAngst"], "rlnOriginYAngst", path) / mic_pixel
    elif {"rlnOriginX", "rlnOriginY"} <= set(table.columns):
        part_pixel = _pixel_sizes(table, blocks, "rlnImagePixelSize", path)
        with np.errstate(all="ignore"):
            scale = np.where(np.isfinite(part_pixel) & np.isfinite(mic_pixel), part_pixel / mic_pixel, 1.0)
        x = x - _numbers(table["rlnOriginX"], "rlnOriginX", path) * scale
        y = y - _numbers(table["rlnOriginY"], "rlnOriginY", path) * scale
    keep = np.array([o is not None for o in owners], dtype=bool)
    missing = sorted({str(n) for n, o in zip(table["rlnMicrographName"], owners, strict=True) if o is None})
    if missing:
        log.warning(
            "%d particle(s) on %d micrograph(s) not in the input micrographs were skipped (e.g. %s)",
            int((~keep).sum()),
            len(missing),
            missing[0],
        )
    if not (np.isfinite(x[keep]).all() and np.isfinite(y[keep]).all()):
        raise InputError("holds particle coordinates (or origin shifts) that are not finite numbers", path)
    names = np.array([o.entry.name if o else "" for o in owners], dtype=object)
    return Picks(names[keep], x[keep], y[keep])
