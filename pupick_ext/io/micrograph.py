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
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.utils import byte_order_from_machine_stamp

from ..errors import InputError

log = logging.getLogger(__name__)

#: MRC modes a micrograph may have: int8, int16, float32, uint16, float16.
SUPPORTED_MODES = {0, 1, 2, 6, 12}
#: largest pixel magnitude accepted: squares and FFT sums of larger float32 values overflow to inf
#: (detector counts and normalized images are many orders of magnitude below)
MAX_PIXEL_MAGNITUDE = 1e15
#: bytes per pixel of each supported mode
_ITEMSIZE = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}


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
    _precheck_header(path, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mrcfile.mmap(path, mode="r", permissive=True)
    except (ValueError, OSError, ArithmeticError, TypeError, IndexError) as exc:
        # mrcfile's own parsing (e.g. a volume stack with mz = 0 divides by zero)
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable MRC file ({detail})", path) from None


def _precheck_header(path: Path, size: int) -> None:
    """Validate the 1024-byte header and the file size before mrcfile sees the file.

    mrcfile allocates and reads the extended header (``nsymbt`` bytes) and maps the data
    block the header describes before any check of ours could run, so a corrupt size field
    would cost memory (or MemoryError) instead of a clear message. The byte order is chosen
    as mrcfile chooses it (machine stamp, little-endian by default, the opposite order when
    only that gives a valid mode), so what is checked here is what mrcfile will read.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(1024)
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", path) from None
    header = np.frombuffer(raw, dtype=HEADER_DTYPE).reshape(())
    if bytes(header["map"])[:3] != b"MAP":
        raise InputError("not an MRC file (no 'MAP' stamp in the header)", path)
    try:
        order = byte_order_from_machine_stamp(header["machst"])
    except ValueError:
        order = "<"
    header = header.view(HEADER_DTYPE.newbyteorder(order))
    mode = int(header["mode"])
    if mode not in _ITEMSIZE:
        flipped = header.view(header.dtype.newbyteorder())
        if int(flipped["mode"]) in _ITEMSIZE:
            header, mode = flipped, int(flipped["mode"])
    if mode not in _ITEMSIZE:
        raise InputError(f"unsupported MRC mode {mode} (micrographs must be mode 0, 1, 2, 6 or 12)", path)
    nx, ny, nz = (int(header["nx"]), int(header["ny"]), int(header["nz"]))
    if nx <= 0 or ny <= 0 or nz <= 0:
        raise InputError(f"invalid dimensions {nx}x{ny}x{nz} in the MRC header", path)
    nsymbt = int(header["nsymbt"])
    if nsymbt < 0 or 1024 + nsymbt > size:
        raise InputError(f"header size mismatch: the header declares a {nsymbt}-byte extended header "
                         f"but the file has only {size - 1024} bytes after the main header", path)
    expected = nx * ny * nz * _ITEMSIZE[mode]
    available = size - 1024 - nsymbt
    if available < expected:
        raise InputError(f"truncated: header promises {expected} data bytes ({nx}x{ny}x{nz}, mode {mode}), "
                         f"file holds {available}", path)
    if available > expected:
        raise InputError(f"header size mismatch: header promises {expected} data bytes ({nx}x{ny}x{nz}, "
                         f"mode {mode}) but the file holds {available}; the dimensions in the header "
                         "are wrong", path)


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
        raise InputError(
            f"truncated: header promises {expected} data bytes, file holds {max(available, 0)}", path)
    if mrc.data is None:
        raise InputError("header and data size disagree; not a valid MRC file", path)
    if nz != 1 or mrc.data.ndim not in (2, 3) or mrc.data.shape[-2:] != (ny, nx):
        kind = "stack" if mrc.is_image_stack() else "volume"
        raise InputError(f"is a {kind} of {nz} sections; a micrograph must be a single 2-D image", path)
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # cella / mx with mx = 0
        warnings.simplefilter("ignore")
        pixel_size = float(mrc.voxel_size.x)
    return (ny, nx), (pixel_size if np.isfinite(pixel_size) and pixel_size > 0 else None)


def read_micrograph(path: str | Path) -> Micrograph:
    """Read one micrograph as float32 [rows, cols], validated (see module docstring)."""
    path = Path(path)
    with _open(path) as mrc:
        _, pixel_size = _check_header(mrc, path)
        try:  # one float32 copy, whatever the mode and byte order; a single section becomes 2-D
            data = np.array(mrc.data.reshape(mrc.data.shape[-2:]), dtype=np.float32, copy=True)
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
    peak = max(abs(float(data.max())), abs(float(data.min())))
    if peak > MAX_PIXEL_MAGNITUDE:
        raise InputError(f"holds pixel values as large as {peak:.3g}, beyond what float32 arithmetic can "
                         f"filter and normalize (|value| <= {MAX_PIXEL_MAGNITUDE:g}); the file's scaling is "
                         "broken", path)
