"""Fixtures shared by the whole test suite.

Test modules do not ``import conftest`` (several directories have one and the module name
is ambiguous); they take the helpers as fixtures:

* ``write_mrc(path, data, pixel_size)`` writes a 2-D (or 3-D) array as an MRC file (mrcfile).
* ``write_raw_mrc(path, nx, ny, nz, mode, payload, ...)`` writes an MRC header by hand, for modes
  and layouts mrcfile refuses to write (e.g. complex mode 4).
* ``mrc_tools``: both writers and ``synthetic(shape, seed)`` (noise + dark blobs) in one namespace.
* ``tiny_micrographs``: three small synthetic micrographs (two sizes, pixel size in the header).
* ``run_cli(args)``: runs ``pupick`` in-process with click's CliRunner; returns a ``CliResult``
  (exit code, stdout, stderr) and restores the root logger the CLI reconfigures.
* ``run_console(script, args)``: runs an installed console script (``pupick`` by default) in a
  subprocess and captures stdout, stderr and the exit code.

Everything stays small: the machine running the suite has two shared cores.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import mrcfile
import numpy as np
import pytest


# ------------------------------------------------------------------ MRC writers
def write_mrc(path: str | Path, data: np.ndarray, pixel_size: float | None = 1.0) -> Path:
    """Write ``data`` (its dtype picks the MRC mode) to ``path``; header pixel size ``pixel_size``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data))
        if pixel_size is not None:
            mrc.voxel_size = pixel_size
    return path


def write_raw_mrc(
    path: str | Path,
    nx: int,
    ny: int,
    nz: int,
    mode: int,
    payload: bytes,
    pixel_size: float = 1.0,
    stamp: bytes = b"MAP ",
) -> Path:
    """An MRC2014 header written field by field (little-endian), followed by ``payload``.

    Used for files mrcfile will not create, such as complex (mode 4) images.
    """
    header = bytearray(1024)
    struct.pack_into("<3i", header, 0, nx, ny, nz)
    struct.pack_into("<i", header, 12, mode)
    struct.pack_into("<3i", header, 28, nx, ny, nz)  # mx, my, mz
    struct.pack_into("<3f", header, 40, nx * pixel_size, ny * pixel_size, nz * pixel_size)  # cella
    struct.pack_into("<3f", header, 52, 90.0, 90.0, 90.0)  # cellb
    struct.pack_into("<3i", header, 64, 1, 2, 3)  # mapc, mapr, maps
    struct.pack_into("<i", header, 88, 0)  # ispg: image / image stack
    struct.pack_into("<i", header, 92, 0)  # nsymbt
    header[104:108] = b"MRCO"
    struct.pack_into("<i", header, 108, 20140)  # nversion
    header[208:212] = stamp
    header[212:216] = b"\x44\x44\x00\x00"  # machine stamp: little-endian
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(header) + payload)
    return path


@pytest.fixture(name="write_mrc")
def write_mrc_fixture():
    """The :func:`write_mrc` helper as a fixture: ``write_mrc(path, data, pixel_size)``."""
    return write_mrc


@pytest.fixture(name="write_raw_mrc")
def write_raw_mrc_fixture():
    """The :func:`write_raw_mrc` helper as a fixture."""
    return write_raw_mrc


def synthetic_micrograph(
    shape: tuple[int, int], seed: int, n_blobs: int = 6, blob_sigma: float = 3.0
) -> np.ndarray:
    """Gaussian noise plus a few dark Gaussian blobs (cryo-EM contrast), float32."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    image = rng.normal(10.0, 1.0, size=shape)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(8, rows - 8), rng.uniform(8, cols - 8)
        image -= 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * blob_sigma**2))
    return image.astype(np.float32)


@pytest.fixture
def mrc_tools() -> SimpleNamespace:
    """``.write(path, data, pixel_size)``, ``.write_raw(path, nx, ny, nz, mode, payload, ...)``,
    ``.synthetic(shape, seed)``."""
    return SimpleNamespace(write=write_mrc, write_raw=write_raw_mrc, synthetic=synthetic_micrograph)


@dataclass(frozen=True)
class TinySet:
    """Small micrographs on disk: ``paths`` (MRC files), ``shapes`` [rows, cols], ``pixel_size``."""

    directory: Path
    paths: tuple[Path, ...]
    shapes: tuple[tuple[int, int], ...]
    pixel_size: float

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.paths]


@pytest.fixture
def tiny_micrographs(tmp_path: Path) -> TinySet:
    """Three micrographs in ``tmp_path/mics``: 64x96, 64x96 and 72x80 (rows x cols), 1.25 A/px."""
    shapes = ((64, 96), (64, 96), (72, 80))
    directory = tmp_path / "mics"
    paths = tuple(
        write_mrc(directory / f"mic_{i + 1:03d}.mrc", synthetic_micrograph(s, seed=i), 1.25)
        for i, s in enumerate(shapes)
    )
    return TinySet(directory, paths, shapes, 1.25)


# ------------------------------------------------------------------ CLI runners
@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _run_click(command, args: Sequence[str]) -> CliResult:
    from click.testing import CliRunner

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        try:
            runner = CliRunner(mix_stderr=False)  # click < 8.2
        except TypeError:
            runner = CliRunner()  # click >= 8.2 keeps stderr apart by default
        result = runner.invoke(command, [str(a) for a in args], catch_exceptions=True)
        exception = result.exception if not isinstance(result.exception, SystemExit) else None
        return CliResult(result.exit_code, result.stdout, result.stderr, exception)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@pytest.fixture
def run_cli():
    """``run_cli(args)`` runs ``pupick <args>`` in-process (click's CliRunner)."""
    from pupick_ext.cli import main

    def run(args: Sequence[str]) -> CliResult:
        return _run_click(main, args)

    return run


def console_script(name: str) -> str | None:
    """Path of an installed console script, looked up beside this interpreter, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


@pytest.fixture
def run_console(tmp_path: Path):
    """``run_console(args, script="pupick", cwd=None, timeout=120)`` runs an installed console
    script in a subprocess; returns a :class:`CliResult`. Skips when the script is not installed."""

    def run(
        args: Sequence[str], script: str = "pupick", cwd: Path | None = None, timeout: float = 120
    ) -> CliResult:
        exe = console_script(script)
        if exe is None:
            pytest.skip(f"console script {script!r} is not installed")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        proc = subprocess.run(
            [exe, *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd or tmp_path,
            env=env,
            timeout=timeout,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run
