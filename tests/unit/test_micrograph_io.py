"""Reading micrographs: every supported MRC mode, and one InputError naming the file for every bad input."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from pupick_ext import InputError, Micrograph, read_header, read_micrograph

SHAPE = (20, 30)  # rows, cols: non-square so a transposition would show


def _pixels(dtype: np.dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 1000), size=SHAPE).astype(dtype)
    return rng.normal(5.0, 2.0, size=SHAPE).astype(dtype)


@pytest.mark.parametrize(
    ("mode", "dtype"), [(0, np.int8), (1, np.int16), (2, np.float32), (6, np.uint16), (12, np.float16)]
)
def test_supported_modes_read_as_float32_2d(tmp_path: Path, mrc_tools, mode: int, dtype: type) -> None:
    data = _pixels(np.dtype(dtype))
    path = mrc_tools.write(tmp_path / f"mode{mode}.mrc", data, pixel_size=1.5)
    with mrcfile.open(path, permissive=True) as mrc:
        assert int(mrc.header.mode) == mode
    mic = read_micrograph(path)
    assert isinstance(mic, Micrograph)
    assert mic.data.dtype == np.float32
    assert mic.data.ndim == 2 and mic.shape == SHAPE
    np.testing.assert_array_equal(mic.data, data.astype(np.float32))
    assert mic.pixel_size == pytest.approx(1.5)
    assert mic.path == path
    assert read_header(path) == (SHAPE, pytest.approx(1.5))


def test_data_is_a_writable_copy(tmp_path: Path, mrc_tools) -> None:
    path = mrc_tools.write(tmp_path / "a.mrc", _pixels(np.dtype(np.float32)))
    mic = read_micrograph(path)
    mic.data[0, 0] = 123.0  # not a read-only memory map of the file
    assert read_micrograph(path).data[0, 0] != 123.0


def test_zero_pixel_size_means_unknown(tmp_path: Path, mrc_tools) -> None:
    path = mrc_tools.write(tmp_path / "nopix.mrc", _pixels(np.dtype(np.float32)), pixel_size=None)
    assert read_micrograph(path).pixel_size is None
    assert read_header(path) == (SHAPE, None)


def test_big_endian_file(tmp_path: Path) -> None:
    data = _pixels(np.dtype(np.float32))
    path = tmp_path / "be.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data.astype(">f4"))
        mrc.voxel_size = 2.0
    mic = read_micrograph(path)
    assert mic.data.dtype == np.float32
    np.testing.assert_array_equal(mic.data, data)


def test_hand_written_header_is_read(tmp_path: Path, mrc_tools) -> None:
    """Sanity check of the raw writer the error tests below rely on."""
    data = _pixels(np.dtype(np.float32))
    path = mrc_tools.write_raw(
        tmp_path / "raw.mrc",
        nx=SHAPE[1],
        ny=SHAPE[0],
        nz=1,
        mode=2,
        payload=data.astype("<f4").tobytes(),
        pixel_size=1.75,
    )
    mic = read_micrograph(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == pytest.approx(1.75)


# ------------------------------------------------------------------ bad inputs
def _bad_random_bytes(d: Path, tools) -> Path:
    path = d / "random.mrc"
    path.write_bytes(np.random.default_rng(3).bytes(4096))
    return path


def _bad_text(d: Path, tools) -> Path:
    path = d / "notes.mrc"
    path.write_text("this is a text file, not a micrograph\n" * 60)
    return path


def _bad_short_text(d: Path, tools) -> Path:
    path = d / "short.mrc"
    path.write_text("hello\n")
    return path


def _bad_empty(d: Path, tools) -> Path:
    path = d / "empty.mrc"
    path.write_bytes(b"")
    return path


def _bad_truncated(d: Path, tools) -> Path:
    good = tools.write(d / "good.mrc", _pixels(np.dtype(np.float32)))
    path = d / "truncated.mrc"
    path.write_bytes(good.read_bytes()[:-100])
    good.unlink()
    return path


def _bad_header_only(d: Path, tools) -> Path:
    good = tools.write(d / "good.mrc", _pixels(np.dtype(np.float32)))
    path = d / "headeronly.mrc"
    path.write_bytes(good.read_bytes()[:1024])
    good.unlink()
    return path


def _bad_volume(d: Path, tools) -> Path:
    data = np.random.default_rng(0).normal(size=(3, *SHAPE)).astype(np.float32)
    return tools.write(d / "volume.mrc", data)


def _bad_stack(d: Path, tools) -> Path:
    path = d / "stack.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.random.default_rng(0).normal(size=(4, *SHAPE)).astype(np.float32))
        mrc.set_image_stack()
    return path


def _bad_nan(d: Path, tools) -> Path:
    data = _pixels(np.dtype(np.float32))
    data[3, 4] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tools.write(d / "nan.mrc", data)


def _bad_inf(d: Path, tools) -> Path:
    data = _pixels(np.dtype(np.float32))
    data[5, 6] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tools.write(d / "inf.mrc", data)


def _bad_constant(d: Path, tools) -> Path:
    return tools.write(d / "constant.mrc", np.full(SHAPE, 7.0, dtype=np.float32))


def _bad_complex(d: Path, tools) -> Path:
    rng = np.random.default_rng(0)
    data = (rng.normal(size=SHAPE) + 1j * rng.normal(size=SHAPE)).astype("<c8")
    return tools.write_raw(d / "complex.mrc", nx=SHAPE[1], ny=SHAPE[0], nz=1, mode=4, payload=data.tobytes())


def _bad_mode3(d: Path, tools) -> Path:
    payload = np.zeros((SHAPE[0], SHAPE[1], 2), dtype="<i2").tobytes()
    return tools.write_raw(d / "complexint.mrc", nx=SHAPE[1], ny=SHAPE[0], nz=1, mode=3, payload=payload)


def _bad_no_stamp(d: Path, tools) -> Path:
    data = _pixels(np.dtype(np.float32)).astype("<f4")
    return tools.write_raw(
        d / "nostamp.mrc",
        nx=SHAPE[1],
        ny=SHAPE[0],
        nz=1,
        mode=2,
        payload=data.tobytes(),
        stamp=b"\x00\x00\x00\x00",
    )


def _bad_negative_dims(d: Path, tools) -> Path:
    data = _pixels(np.dtype(np.float32)).astype("<f4")
    path = tools.write_raw(d / "negdims.mrc", nx=SHAPE[1], ny=SHAPE[0], nz=1, mode=2, payload=data.tobytes())
    raw = bytearray(path.read_bytes())
    struct.pack_into("<i", raw, 0, -30)
    path.write_bytes(bytes(raw))
    return path


def _bad_directory(d: Path, tools) -> Path:
    path = d / "folder.mrc"
    path.mkdir()
    return path


def _bad_missing(d: Path, tools) -> Path:
    return d / "does_not_exist.mrc"


BAD_FILES = {
    "random-bytes": (_bad_random_bytes, "MRC"),
    "text": (_bad_text, "MRC"),
    "short-text": (_bad_short_text, "MRC"),
    "empty": (_bad_empty, "empty"),
    "truncated": (_bad_truncated, "truncated"),
    "header-only": (_bad_header_only, "truncated"),
    "volume": (_bad_volume, "2-D"),
    "stack": (_bad_stack, "stack"),
    "nan": (_bad_nan, "NaN"),
    "inf": (_bad_inf, "infinite"),
    "zero-variance": (_bad_constant, "variance"),
    "complex-mode-4": (_bad_complex, "mode 4"),
    "complex-mode-3": (_bad_mode3, "mode 3"),
    "no-map-stamp": (_bad_no_stamp, "MAP"),
    "negative-dimensions": (_bad_negative_dims, "dimensions"),
    "directory": (_bad_directory, "directory"),
    "missing": (_bad_missing, "not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_input_error_naming_file_and_problem(tmp_path: Path, mrc_tools, case: str) -> None:
    make, problem = BAD_FILES[case]
    path = make(tmp_path, mrc_tools)
    with pytest.raises(InputError) as info:
        read_micrograph(path)
    err = info.value
    message = str(err)
    assert path.name in message
    assert err.path is not None and Path(err.path).name == path.name
    assert problem.lower() in message.lower(), message
    assert message == f"{err.path}: {err.problem}"
    assert "\n" not in message


def test_text_file_is_rejected_without_allocating_its_bogus_sizes(tmp_path: Path, mrc_tools) -> None:
    import tracemalloc

    path = _bad_text(tmp_path, mrc_tools)  # bytes 92-95 read as an extended header of ~700 MB
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="notes.mrc"):
            read_micrograph(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


HEADER_CASES = ["random-bytes", "text", "empty", "truncated", "volume", "stack", "complex-mode-4", "missing"]


@pytest.mark.parametrize("case", HEADER_CASES)
def test_read_header_rejects_bad_files_too(tmp_path: Path, mrc_tools, case: str) -> None:
    make, _ = BAD_FILES[case]
    path = make(tmp_path, mrc_tools)
    with pytest.raises(InputError, match=path.name):
        read_header(path)


def test_random_garbage_never_escapes_as_another_exception(tmp_path: Path, mrc_tools) -> None:
    """Fuzz: random bytes, random bytes with a MAP stamp, a good file with random header bytes."""
    rng = np.random.default_rng(11)
    good = mrc_tools.write(tmp_path / "good.mrc", _pixels(np.dtype(np.float32))).read_bytes()
    target = tmp_path / "fuzz.mrc"
    for i in range(60):
        if i % 3 == 0:
            blob = rng.bytes(int(rng.integers(1024, 5000)))
        elif i % 3 == 1:
            raw = bytearray(rng.bytes(int(rng.integers(1024, 5000))))
            raw[208:212] = b"MAP "
            blob = bytes(raw)
        else:
            raw = bytearray(good)
            for _ in range(3):
                raw[int(rng.integers(0, 224))] = int(rng.integers(0, 256))
            blob = bytes(raw)
        target.write_bytes(blob)
        try:
            mic = read_micrograph(target)
        except InputError as exc:
            assert "fuzz.mrc" in str(exc)
        else:
            assert mic.data.dtype == np.float32 and mic.data.ndim == 2


@pytest.mark.parametrize("stamp", [b"JUNK", b"MAP "])
def test_bogus_extended_header_size_is_cheap_to_reject(tmp_path: Path, mrc_tools, stamp: bytes) -> None:
    """mrcfile allocates the extended header (nsymbt bytes, bytes 92-95) before anything else:
    a corrupt size field must not cost memory (or MemoryError) before the InputError."""
    import tracemalloc

    data = _pixels(np.dtype(np.float32)).astype("<f4")
    path = mrc_tools.write_raw(
        tmp_path / "bogus.mrc", nx=SHAPE[1], ny=SHAPE[0], nz=1, mode=2, payload=data.tobytes(), stamp=stamp
    )
    raw = bytearray(path.read_bytes())
    struct.pack_into("<i", raw, 92, 64 * 2**20)  # claims a 64 MiB extended header in a 3 KiB file
    path.write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="bogus.mrc"):
            read_micrograph(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"rejecting a 3 KiB file allocated {peak / 2**20:.0f} MiB"


def test_single_section_volume_header_is_a_micrograph(tmp_path: Path, mrc_tools) -> None:
    """ispg=1, nz=1: what mrcfile (and some other writers) produce for a (1, ny, nx) array."""
    data = _pixels(np.dtype(np.float32))
    path = mrc_tools.write(tmp_path / "onesection.mrc", data[None], pixel_size=1.5)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.nz) == 1 and int(mrc.header.ispg) == 1
    mic = read_micrograph(path)
    np.testing.assert_array_equal(mic.data, data)
