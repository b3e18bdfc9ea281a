"""Reading and validating micrographs (MRC via mrcfile).

Every problem a user's file can have becomes an :class:`InputError` naming the file:
not an MRC, truncated, a stack or volume, an unsupported mode, NaN/Inf, zero variance.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

#: MRC modes a micrograph may have: int8, int16, float32, uint16, float16.
SUPPORTED_MODES = {0, 1, 2, 6, 12}


@dataclass(frozen=True)
class Micrograph:
    """A 2-D image [rows, cols] as float32 and its pixel size in A/px (None if unknown)."""

    data: np.ndarray
    pixel_size: float | None
    path: Path

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))


def _open(path: Path) -> mrcfile.mrcfile.MrcFile:
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir():
        raise InputError("is a directory, not a micrograph", path)
    size = path.stat().st_size
    if size == 0:
        raise InputError("file is empty", path)
    if size < 1024:
        raise InputError(f"not an MRC file (only {size} bytes, shorter than an MRC header)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mrcfile.mmap(path, mode="r", permissive=True)
    except (ValueError, OSError) as exc:
        raise InputError(f"not a readable MRC file ({exc})", path) from None


def read_header(path: str | Path) -> tuple[tuple[int, int], float | None]:
    """Shape [rows, cols] and pixel size of a micrograph without reading its pixels."""
    path = Path(path)
    with _open(path) as mrc:
        shape, pixel_size = _check_header(mrc, path)
    return shape, pixel_size


def _check_header(mrc: mrcfile.mrcfile.MrcFile, path: Path) -> tuple[tuple[int, int], float | None]:
    header = mrc.header
    if header is None or not bytes(header.map).startswith(b"MAP"):
        raise InputError("not an MRC file (no 'MAP' stamp in the header)", path)
    mode = int(header.mode)
    if mode not in SUPPORTED_MODES:
        raise InputError(f"unsupported MRC mode {mode} (micrographs must be mode 0, 1, 2, 6 or 12)", path)
    nx, ny, nz = (int(header.nx), int(header.ny), int(header.nz))
    if nx <= 0 or ny <= 0 or nz <= 0:
        raise InputError(f"invalid dimensions {nx}x{ny}x{nz} in the MRC header", path)
    itemsize = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}[mode]
    expected = nx * ny * nz * itemsize
    available = path.stat().st_size - header.nbytes - max(int(header.nsymbt), 0)
    if available < expected:
        raise InputError(f"truncated: header promises {expected} data bytes, file holds {max(available, 0)}", path)
    if mrc.data is None:
        raise InputError("header and data size disagree; not a valid MRC file", path)
    if nz != 1 or mrc.data.ndim != 2:
        kind = "stack" if mrc.is_image_stack() else "volume"
        raise InputError(f"is a {kind} of {nz} sections; a micrograph must be a single 2-D image", path)
    pixel_size = float(mrc.voxel_size.x)
    return (ny, nx), (pixel_size if pixel_size > 0 else None)


def read_micrograph(path: str | Path) -> Micrograph:
    """Read one micrograph as float32 [rows, cols], validated (see module docstring)."""
    path = Path(path)
    with _open(path) as mrc:
        _, pixel_size = _check_header(mrc, path)
        try:
            data = np.asarray(mrc.data, dtype=np.float32).copy()
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read pixel data ({exc})", path) from None
    validate_pixels(data, path)
    return Micrograph(data=data, pixel_size=pixel_size, path=path)


def validate_pixels(data: np.ndarray, path: str | Path) -> None:
    """Raise InputError if the image holds NaN/Inf or has no contrast at all."""
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(f"contains {bad} NaN or infinite pixel values", path)
    if data.size == 0 or float(data.max()) == float(data.min()):
        raise InputError("has zero variance (every pixel is the same): nothing to pick", path)
