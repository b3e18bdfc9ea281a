"""Lists of micrographs from a RELION STAR file, a text file, a directory or single MRCs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..settings import MicrographEntry, micrograph_stem
from .starfiles import find_table, read_star

log = logging.getLogger(__name__)

MRC_SUFFIXES = (".mrc", ".mrcs")


def _resolve(raw: str, base: Path) -> Path:
    """A path as written in a list file: absolute, relative to the working directory
    (RELION's project-directory convention) or, failing that, to the list file's folder."""
    path = Path(raw)
    if path.is_absolute() or path.exists():
        return path
    beside = base / path
    return beside if beside.exists() else path


def _pixel_sizes_from_star(tables: dict[str, pd.DataFrame], mics: pd.DataFrame) -> np.ndarray:
    """Per-row pixel size from the 3.1+ optics table or the 3.0 magnification columns."""
    n = len(mics)
    if "rlnMicrographPixelSize" in mics.columns:
        return mics["rlnMicrographPixelSize"].to_numpy(float)
    optics = tables.get("optics")
    if optics is not None and "rlnOpticsGroup" in mics.columns and "rlnOpticsGroup" in optics.columns:
        candidates = ("rlnMicrographPixelSize", "rlnImagePixelSize", "rlnMicrographOriginalPixelSize")
        column = next((c for c in candidates if c in optics.columns), None)
        if column is not None:
            groups = optics["rlnOpticsGroup"].astype(int)
            lookup = dict(zip(groups, optics[column].astype(float), strict=True))
            return np.array([lookup.get(int(g), np.nan) for g in mics["rlnOpticsGroup"]])
    if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(mics.columns):
        return mics["rlnDetectorPixelSize"].to_numpy(float) * 1e4 / mics["rlnMagnification"].to_numpy(float)
    return np.full(n, np.nan)


def read_micrograph_list(source: str | Path | Sequence[str | Path]) -> list[MicrographEntry]:
    """Micrographs named by a STAR file, a text file of paths, a directory of .mrc, or paths.

    Names (the key coordinates are matched on) are file stems and must be unique.
    """
    if not isinstance(source, (str, Path)):
        entries = [e for item in source for e in read_micrograph_list(item)]
        return _check_unique(entries, "the given micrographs")
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in MRC_SUFFIXES)
        if not files:
            raise InputError("directory holds no .mrc micrographs", path)
        return _check_unique([MicrographEntry(p) for p in files], path)
    if not path.exists():
        raise InputError("file not found", path)
    suffix = path.suffix.lower()
    if suffix in MRC_SUFFIXES:
        return [MicrographEntry(path)]
    if suffix == ".star":
        return _from_star(path)
    return _from_text(path)


def _from_star(path: Path) -> list[MicrographEntry]:
    tables = read_star(path)
    mics = find_table(tables, ("rlnMicrographName",), path, preferred=("micrographs", ""))
    try:
        sizes = _pixel_sizes_from_star(tables, mics)
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise InputError(f"non-numeric pixel size, magnification or optics group ({detail})", path) from None
    entries = []
    for raw, psize in zip(mics["rlnMicrographName"].astype(str), sizes, strict=True):
        entries.append(MicrographEntry(_resolve(raw, path.parent), micrograph_stem(raw),
                                       None if not np.isfinite(psize) or psize <= 0 else float(psize)))
    if not entries:
        raise InputError("lists no micrographs", path)
    return _check_unique(entries, path)


def _from_text(path: Path) -> list[MicrographEntry]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of a path
    except UnicodeDecodeError:
        raise InputError("not a text list of micrograph paths (binary content)", path) from None
    raws = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not raws:
        raise InputError("lists no micrographs", path)
    return _check_unique([MicrographEntry(_resolve(r, path.parent)) for r in raws], path)


def _check_unique(entries: list[MicrographEntry], where: str | Path) -> list[MicrographEntry]:
    seen: dict[str, Path] = {}
    for entry in entries:
        if entry.name in seen and seen[entry.name] != entry.path:
            raise InputError(f"two micrographs share the name {entry.name!r} ({seen[entry.name]} and "
                             f"{entry.path}); coordinates could not be told apart", where)
        seen[entry.name] = entry.path
    unique = {e.name: e for e in entries}
    return list(unique.values())
