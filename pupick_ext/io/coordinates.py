"""Coordinate files: Topaz-style text, RELION STAR, EMAN .box; and name matching.

Every reader returns a :class:`Picks` in original-micrograph pixels (x = column,
y = row); every writer is atomic. Numbers are written in the shortest form that reads
back to the same float, so round trips are exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, PupickError, SettingsError
from ..settings import MicrographEntry, micrograph_stem
from .fsio import write_atomic
from .picks import Picks
from .starfiles import find_table, read_star, write_star

log = logging.getLogger(__name__)

FORMATS = ("txt", "star", "box")
_EXTENSIONS = {".txt": "txt", ".tsv": "txt", ".csv": "txt", ".coords": "txt", ".star": "star", ".box": "box"}


def guess_format(path: str | Path, fmt: str | None = None) -> str:
    """The coordinate format named by ``fmt`` or implied by the file extension."""
    if fmt == "csv":  # comma-separated Topaz-style text: the text reader detects the separator
        return "txt"
    if fmt:
        if fmt not in FORMATS:
            raise SettingsError(f"unknown coordinate format {fmt!r}; choose from {', '.join(FORMATS)}")
        return fmt
    found = _EXTENSIONS.get(Path(path).suffix.lower())
    if found is None:
        raise SettingsError(
            f"{path}: cannot tell the coordinate format from the extension; give it explicitly")
    return found


def _num(value: float) -> str:
    return np.format_float_positional(float(value), trim="-") if np.isfinite(value) else "nan"


# ---------------------------------------------------------------- reading
def read_coordinates(path: str | Path, fmt: str | None = None) -> Picks:
    """Read one coordinate file, or every coordinate file in a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _EXTENSIONS and p.is_file())
        files = [p for p in files if not p.name.startswith(("coords_suffix", "RELION_", "."))]
        if not files:
            raise InputError("directory holds no coordinate files (.star, .txt, .box)", path)
        return Picks.concat(read_coordinates(p, fmt) for p in files)
    if not path.is_file():
        raise InputError("file not found", path)
    kind = guess_format(path, fmt)
    reader = {"txt": _read_txt, "star": _read_star, "box": _read_box}[kind]
    try:
        picks = reader(path)
    except PupickError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        # a value of the wrong type or a table of the wrong shape somewhere in the file
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise InputError(f"malformed {kind} coordinate file ({detail})", path) from None
    _check_values(picks, path)
    return picks


def _check_values(picks: Picks, path: Path) -> None:
    if not (np.isfinite(picks.x).all() and np.isfinite(picks.y).all()):
        raise InputError("holds coordinates that are not finite numbers", path)


def _read_txt(path: Path) -> Picks:
    try:
        # names such as "NA" or "None" are names, not missing values; only numbers may be NaN
        missing = ["nan", "NaN", "NAN", ""]
        table = pd.read_csv(path, sep=None, engine="python", comment="#", dtype={"image_name": str},
                            encoding="utf-8-sig",  # a byte-order mark (Windows editors) is not part of a name
                            keep_default_na=False,
                            na_values={"x_coord": missing, "y_coord": missing, "score": missing})
    except Exception as exc:
        raise InputError(f"not a readable coordinate table ({exc})".splitlines()[0], path) from None
    table.columns = [str(c).strip() for c in table.columns]
    absent = {"image_name", "x_coord", "y_coord"} - set(table.columns)
    if absent:
        raise InputError(f"missing column(s) {', '.join(sorted(absent))}; "
                         "expected image_name x_coord y_coord [score]", path)
    try:
        x = table["x_coord"].to_numpy(float)
        y = table["y_coord"].to_numpy(float)
        score = table["score"].to_numpy(float) if "score" in table.columns else None
    except ValueError as exc:
        raise InputError(f"non-numeric coordinate ({exc})", path) from None
    names = table["image_name"].astype(str).map(micrograph_stem).to_numpy(object)
    return Picks(names, x, y, np.full(len(x), np.nan) if score is None else score)


def _read_star(path: Path) -> Picks:
    tables = read_star(path)
    table = find_table(tables, ("rlnCoordinateX", "rlnCoordinateY"), path, preferred=("particles", ""))
    try:
        x = table["rlnCoordinateX"].to_numpy(float)
        y = table["rlnCoordinateY"].to_numpy(float)
    except (ValueError, TypeError) as exc:
        raise InputError(f"non-numeric coordinate ({exc})", path) from None
    score = (table["rlnAutopickFigureOfMerit"].to_numpy(float)
             if "rlnAutopickFigureOfMerit" in table.columns else np.full(len(x), np.nan))
    if "rlnMicrographName" in table.columns:
        names = table["rlnMicrographName"].astype(str).map(micrograph_stem).to_numpy(object)
        x, y = _add_back_origin_shifts(table, tables, x, y)
    else:
        names = np.full(len(x), micrograph_stem(path), dtype=object)
    return Picks(names, x, y, score)


def _add_back_origin_shifts(table: pd.DataFrame, tables: dict[str, pd.DataFrame],
                            x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Particle centres of an extracted/refined particle STAR: coordinate - origin shift.

    RELION 3.1+ stores shifts in A (``_rlnOriginXAngst``), which are subtracted after
    dividing by the micrograph pixel size (the particle centre is at coordinate - origin;
    src/preprocessing.cpp). A particles STAR may not carry the micrograph pixel size; the
    movie pixel size (``_rlnMicrographOriginalPixelSize``) is then used, which is wrong by
    the binning factor if motion correction binned: a warning says so. Pre-3.1 shifts
    (``_rlnOriginX``, in pixels of the extracted image) are subtracted only when the
    particles were not rescaled, which cannot be told from the file: also warned.
    """
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(table.columns):
        optics = tables.get("optics")
        psize = None
        if optics is not None and "rlnOpticsGroup" in table.columns:
            column = next((c for c in ("rlnMicrographPixelSize", "rlnMicrographOriginalPixelSize")
                           if c in optics.columns), None)
            if column == "rlnMicrographOriginalPixelSize":
                log.warning("particle origin shifts converted with the movie pixel size "
                            "(_rlnMicrographOriginalPixelSize); wrong if motion correction binned")
            if column:
                groups = optics["rlnOpticsGroup"].astype(int)
                lookup = dict(zip(groups, optics[column].astype(float), strict=True))
                psize = np.array([lookup.get(int(g), np.nan) for g in table["rlnOpticsGroup"]])
        if psize is not None and np.isfinite(psize).all():
            return (x - table["rlnOriginXAngst"].to_numpy(float) / psize,
                    y - table["rlnOriginYAngst"].to_numpy(float) / psize)
    elif {"rlnOriginX", "rlnOriginY"} <= set(table.columns):
        log.warning("pre-3.1 particle origins (_rlnOriginX, pixels) subtracted as micrograph pixels; "
                    "wrong if the particles were extracted with rescaling")
        return x - table["rlnOriginX"].to_numpy(float), y - table["rlnOriginY"].to_numpy(float)
    return x, y


def _read_box(path: Path) -> Picks:
    try:
        rows = np.loadtxt(path, ndmin=2, comments="#", encoding="utf-8-sig")
    except ValueError as exc:
        raise InputError(f"not an EMAN .box file ({exc})".splitlines()[0], path) from None
    if rows.size == 0:
        return Picks.for_one(micrograph_stem(path), np.empty(0), np.empty(0))
    if rows.shape[1] < 4:
        raise InputError(
            f"EMAN .box rows need 4 columns (x y width height), found {rows.shape[1]}", path)
    x = rows[:, 0] + rows[:, 2] / 2
    y = rows[:, 1] + rows[:, 3] / 2
    return Picks.for_one(micrograph_stem(path), x, y)


# ---------------------------------------------------------------- writing
def write_coordinates(picks: Picks, path: str | Path, fmt: str | None = None,
                      box_size: int | None = None) -> Path:
    """Write ``picks`` to one file (a STAR with several micrographs gets _rlnMicrographName)."""
    path = Path(path)
    kind = guess_format(path, fmt)
    if kind == "txt":
        lines = ["image_name\tx_coord\ty_coord\tscore"]
        lines += [f"{n}\t{_num(x)}\t{_num(y)}\t{_num(s)}"
                  for n, x, y, s in zip(picks.micrograph, picks.x, picks.y, picks.score, strict=True)]
        write_atomic(path, "\n".join(lines) + "\n")
    elif kind == "star":
        if len(set(picks.micrograph)) <= 1:
            return write_coordinate_star(picks, path)
        table = pd.DataFrame({"rlnMicrographName": picks.micrograph.astype(str), **_star_columns(picks)})
        write_star({"particles": table}, path)
    else:
        if len(set(picks.micrograph)) > 1:
            raise SettingsError(f"{path}: an EMAN .box file holds one micrograph; write a directory instead")
        _write_box(picks, path, box_size)
    return path


def _star_columns(picks: Picks) -> dict[str, np.ndarray]:
    columns = {
        "rlnCoordinateX": picks.x,
        "rlnCoordinateY": picks.y,
        "rlnClassNumber": np.zeros(len(picks), dtype=int),
        "rlnAnglePsi": np.full(len(picks), -999.0),
    }
    if np.isfinite(picks.score).any():  # hand-picked coordinates carry no score
        columns["rlnAutopickFigureOfMerit"] = np.where(np.isfinite(picks.score), picks.score, -999.0)
    return columns


def write_coordinate_star(picks: Picks, path: str | Path) -> Path:
    """A RELION coordinate STAR file for one micrograph, as RELION's autopicker writes it."""
    return write_star({"": pd.DataFrame(_star_columns(picks))}, path)


def _write_box(picks: Picks, path: Path, box_size: int | None) -> None:
    if box_size is None or box_size <= 0:
        raise SettingsError("writing EMAN .box files needs a box size in pixels")
    half = box_size / 2
    lines = [f"{_num(x - half)}\t{_num(y - half)}\t{box_size}\t{box_size}"
             for x, y in zip(picks.x, picks.y, strict=True)]
    write_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def write_coordinates_per_micrograph(picks: Picks, directory: str | Path, fmt: str = "star", suffix: str = "",
                                     names: Iterable[str] | None = None,
                                     box_size: int | None = None) -> list[Path]:
    """One file per micrograph, ``<directory>/<name><suffix>.<fmt>`` (also for names with no picks)."""
    directory = Path(directory)
    written = []
    for name in (list(names) if names is not None else picks.names):
        target = directory / f"{name}{suffix}.{fmt}"
        one = picks.for_micrograph(name)
        if fmt == "star":
            write_coordinate_star(one, target)
        else:
            if not len(one):
                one = Picks.for_one(name, np.empty(0), np.empty(0))
            write_coordinates(one, target, fmt, box_size)
        written.append(target)
    return written


# ---------------------------------------------------------------- names
def match_micrograph_names(picks: Picks, micrographs: Iterable[MicrographEntry]) -> Picks:
    """Rename picks to the names of ``micrographs`` (path, basename, stem, or stem + '_suffix').

    Picks whose micrograph is not in the list are dropped with a warning naming them.
    """
    entries = list(micrographs)
    exact = {e.name: e.name for e in entries}
    for e in entries:
        exact.setdefault(str(e.path), e.name)
        exact.setdefault(e.path.name, e.name)
        exact.setdefault(micrograph_stem(e.path), e.name)
    by_length = sorted(exact, key=len, reverse=True)
    mapping: dict[str, str] = {}
    unknown = []
    for raw in picks.names:
        key = micrograph_stem(raw)
        if raw in exact or key in exact:
            mapping[raw] = exact.get(raw, exact.get(key, key))
            continue
        # coordinate files named <micrograph>_<suffix> (e.g. mic_001_manualpick)
        match = next((exact[n] for n in by_length
                      if key.startswith(n + "_") or Path(key).name.startswith(n + "_")), None)
        if match is None:
            unknown.append(raw)
        else:
            mapping[raw] = match
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        log.warning("ignoring coordinates for %d micrograph(s) not in the micrograph list: %s",
                    len(unknown), shown)
    keep = np.isin(picks.micrograph, list(mapping))
    return picks.select(keep).renamed(mapping)
