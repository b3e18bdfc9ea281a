"""Thin, error-checked access to STAR files through the starfile library."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import starfile

from ..errors import InputError
from .fsio import atomic_path

#: First line of every STAR file pupick writes (as RELION 3.1+ writes it; no time stamp)
STAR_HEADER = "# version 30001"
#: columns that hold names: kept as text even when they look like numbers ("001", "1e5", "TRUE")
TEXT_COLUMNS = ("rlnMicrographName", "rlnImageName", "rlnMicrographMovieName", "rlnMicrographCoordinates",
                "rlnCtfImage", "rlnOpticsGroupName")


def read_star(path: str | Path) -> dict[str, pd.DataFrame]:
    """All data blocks of a STAR file as {block name: table}; InputError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found" if not path.exists() else "not a file", path)
    if path.stat().st_size == 0:
        raise InputError("STAR file is empty", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = starfile.read(path, always_dict=True, parse_as_string=list(TEXT_COLUMNS))
    except Exception as exc:  # starfile raises many types on malformed text
        message = f"not a readable STAR file ({type(exc).__name__}: {exc})".splitlines()[0]
        raise InputError(message, path) from None
    tables = {name: df for name, df in blocks.items() if isinstance(df, pd.DataFrame)}
    if not tables:
        raise InputError("STAR file holds no data table", path)
    for name, table in tables.items():
        if table.columns.duplicated().any():
            twice = table.columns[table.columns.duplicated()][0]
            raise InputError(f"data_{name} has the column _{twice} twice", path)
    return tables


def find_table(tables: dict[str, pd.DataFrame], columns: tuple[str, ...], path: str | Path,
               preferred: tuple[str, ...] = ()) -> pd.DataFrame:
    """The first table (preferred block names first) holding all ``columns``."""
    order = [n for n in preferred if n in tables] + [n for n in tables if n not in preferred]
    for name in order:
        if all(c in tables[name].columns for c in columns):
            return tables[name]
    found = "; ".join(f"data_{n}: {', '.join(map(str, t.columns[:6]))}" for n, t in tables.items())
    raise InputError(f"no table with columns {', '.join('_' + c for c in columns)} (found {found})", path)


def write_star(blocks: dict[str, pd.DataFrame] | pd.DataFrame, path: str | Path, *,
               layout: Literal["exact", "relion31"] = "exact") -> Path:
    """Write one or more tables as a STAR file, atomically (verified by reading every block back).

    Either way the file carries no time stamp, so equal tables give byte-identical files.

    - ``"exact"`` (pupick's outputs): float columns as the shortest text that reads back to the
      same value, tab separated, one ``# version 30001`` line at the top.
    - ``"relion31"`` (the demo data, laid out as RELION 3.1 programs write theirs): floats with six
      decimals, space separated, and ``# version 30001`` before every data block.
    """
    if layout not in ("exact", "relion31"):
        raise ValueError(f"unknown STAR layout {layout!r}")
    if isinstance(blocks, pd.DataFrame):
        blocks = {"": blocks}
    relion = layout == "relion31"
    tables = {name: table if relion else _shortest_floats(table) for name, table in blocks.items()}
    rows = {name: len(table) for name, table in tables.items()}

    def reads_back(tmp: Path) -> None:  # every block, every row: nothing lost on a full disk
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = starfile.read(tmp, always_dict=True, parse_as_string=list(TEXT_COLUMNS))
        got = {name: len(t) for name, t in found.items() if isinstance(t, pd.DataFrame)}
        if any(got.get(name, 0) != n for name, n in rows.items() if n):
            raise ValueError(f"rows per block {got}, expected {rows}")

    with atomic_path(path, verify=reads_back) as tmp:
        relion_style = {"sep": " ", "float_format": "%.6f"} if relion else {}
        starfile.write(tables, tmp, overwrite=True, **relion_style)
        # starfile heads the file with the time of writing; RELION's own "# version 30001" instead
        # makes equal tables give byte-identical files (re-runs and resumed runs can be compared)
        text = tmp.read_text(encoding="utf-8")
        first, newline, rest = text.partition("\n")
        if first.startswith("# Created by the starfile"):
            text = rest if relion else STAR_HEADER + newline + rest
        if relion:
            text = _version_per_block(text.lstrip("\n"), list(tables))
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _version_per_block(text: str, names: list[str]) -> str:
    """``# version 30001`` and a blank line before each block's ``data_<name>`` line, in order."""
    lines: list[str] = []
    waiting = [f"data_{name}" for name in names]
    for line in text.split("\n"):
        if waiting and line == waiting[0]:  # the header comes before its block's rows
            lines += [STAR_HEADER, ""]
            waiting.pop(0)
        lines.append(line)
    return "\n".join(lines)


def _shortest_floats(table: pd.DataFrame) -> pd.DataFrame:
    """Float columns as the shortest text that reads back to the same value (exact round trips)."""
    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = [np.format_float_positional(v, trim="-") if np.isfinite(v) else "nan"
                           for v in out[column].to_numpy(float)]
    return out
