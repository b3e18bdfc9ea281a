"""Fuzzing every reader of user files: the only exception a reader may raise is a PupickError.

STAR text is built from the pieces real STAR files are made of (block names, loops, RELION labels,
numbers, quoted and unquoted strings, comments) shuffled with random text and bytes; coordinate
text and .box files from numbers, names and junk; MRC files are valid micrographs with random
header fields and bytes, truncations and extensions, and random bytes. A reader that returns
must return something usable (a finite 2-D float32 micrograph, picks with finite coordinates).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from make_bad_inputs import raw_mrc_header

from pupick_ext import (
    Micrograph,
    Picks,
    PupickError,
    read_coordinates,
    read_header,
    read_micrograph,
    read_micrograph_list,
)
from relion_wrapper import star_io

#: 150 derandomized examples per reader in the suite; for a deeper search run e.g.
#: PUPICK_FUZZ_EXAMPLES=5000 PUPICK_FUZZ_RANDOM=1 python -m pytest tests/reliability/test_fuzz_readers.py
FUZZ = settings(
    max_examples=int(os.environ.get("PUPICK_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    derandomize=not os.environ.get("PUPICK_FUZZ_RANDOM"),
)

LABELS = [
    "_rlnMicrographName",
    "_rlnOpticsGroup",
    "_rlnMicrographPixelSize",
    "_rlnImagePixelSize",
    "_rlnMicrographOriginalPixelSize",
    "_rlnCoordinateX",
    "_rlnCoordinateY",
    "_rlnAutopickFigureOfMerit",
    "_rlnOriginXAngst",
    "_rlnOriginYAngst",
    "_rlnOriginX",
    "_rlnOriginY",
    "_rlnDetectorPixelSize",
    "_rlnMagnification",
    "_rlnMicrographCoordinates",
    "_rlnImageName",
    "_rlnOpticsGroupName",
]
BLOCKS = ["data_", "data_optics", "data_micrographs", "data_particles", "data_coordinate_files", "data_x"]
VALUES = [
    "1",
    "2",
    "0",
    "-1",
    "1.5",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "abc",
    '""',
    '"a b"',
    "'q'",
    "Micrographs/mic_001.mrc",
    "MotionCorr/job002/Movies/mic_001.mrc",
    "../x.mrc",
    "/abs/m.mrc",
    "mic_001",
    "mic_001_manualpick.star",
    "é",
    "10000",
    "-999",
    "1,5",
    "True",
    "None",
    "0x10",
    "",
]

_value = st.one_of(
    st.sampled_from(VALUES),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)


TEMPLATES = [
    # RELION 3.1 micrographs (two optics groups)
    """# version 30001
data_optics
loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographOriginalPixelSize #3
_rlnMicrographPixelSize #4
opticsGroup1 1 0.75 1.5
opticsGroup2 2 0.5 1.0

# version 30001
data_micrographs
loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
MotionCorr/job002/Movies/mic_001.mrc 1
MotionCorr/job002/Movies/mic_002.mrc 1
Micrographs/mic_003.mrc 2
""",
    # RELION 3.0 micrographs (pixel size from detector pixel and magnification)
    """data_
loop_
_rlnMicrographName #1
_rlnDetectorPixelSize #2
_rlnMagnification #3
Micrographs/mic_001.mrc 5.0 33333
Micrographs/mic_002.mrc 5.0 33333
""",
    # coordinate STAR of one micrograph
    """# version 30001
data_
loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnClassNumber #3
_rlnAnglePsi #4
_rlnAutopickFigureOfMerit #5
100.5 200.25 0 -999 1.5
30 40 0 -999 -2
""",
    # RELION 3.1 particles with origin shifts
    """data_optics
loop_
_rlnOpticsGroup #1
_rlnImagePixelSize #2
_rlnMicrographOriginalPixelSize #3
1 3.0 0.75

data_particles
loop_
_rlnMicrographName #1
_rlnCoordinateX #2
_rlnCoordinateY #3
_rlnOriginXAngst #4
_rlnOriginYAngst #5
_rlnOpticsGroup #6
MotionCorr/job002/Movies/mic_001.mrc 100 120 3.0 -1.5 1
Micrographs/mic_002.mrc 50 60 0 0 1
""",
    # RELION 3.0 particles (origins in pixels)
    """data_
loop_
_rlnMicrographName #1
_rlnCoordinateX #2
_rlnCoordinateY #3
_rlnOriginX #4
_rlnOriginY #5
mic_001.mrc 100 120 1 2
""",
    # RELION 4.0 coordinate index
    """data_coordinate_files
loop_
_rlnMicrographName #1
_rlnMicrographCoordinates #2
MotionCorr/job002/Movies/mic_001.mrc ManualPick/job004/Movies/mic_001_manualpick.star
Micrographs/mic_002.mrc ManualPick/job004/mic_002_manualpick.star
""",
]


@st.composite
def star_text(draw) -> str:
    """A valid STAR file of a kind pupick reads, mutated: values and labels swapped for others,
    lines dropped, duplicated or replaced by junk, the file cut short."""
    lines = draw(st.sampled_from(TEMPLATES)).splitlines()
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["value", "value", "value", "label", "drop", "dup", "junk", "block"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if not lines:
            break
        tokens = lines[i].split()
        if op == "value" and tokens and not lines[i].startswith(("_", "data_", "#", "loop_")):
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(_value) or "x"
            lines[i] = " ".join(tokens)
        elif op == "label" and lines[i].startswith("_"):
            lines[i] = f"{draw(st.sampled_from(LABELS))} #{i}"
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "junk":
            lines[i] = draw(st.text(max_size=30))
        elif op == "block":
            lines[i] = draw(st.sampled_from(BLOCKS))
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 5)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


@st.composite
def table_text(draw) -> str:
    """Topaz-style coordinate text: a header of known and unknown columns, rows of mixed values."""
    columns = draw(
        st.lists(
            st.sampled_from(["image_name", "x_coord", "y_coord", "score", "other"]), min_size=0, max_size=5
        )
    )
    sep = draw(st.sampled_from(["\t", " ", ",", ";"]))
    lines = [sep.join(columns)] if draw(st.booleans()) or not columns else []
    for _ in range(draw(st.integers(0, 5))):
        width = draw(st.integers(0, len(columns) + 1))
        lines.append(sep.join(draw(_value) for _ in range(width)))
    if draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=40)))
    return "\n".join(lines) + "\n"


@st.composite
def box_text(draw) -> str:
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        width = draw(st.integers(0, 6))
        rows.append(draw(st.sampled_from(["\t", " "])).join(draw(_value) for _ in range(width)))
    return "\n".join(rows) + draw(st.sampled_from(["\n", ""]))


_content = st.one_of(
    star_text().map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.text().map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300),
)


#: every fuzz file goes under one directory, removed when the module ends (a run once left
#: 1,443 ``pupick_fuzz_*`` directories in the system temp folder)
_FUZZ_ROOT: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _fuzz_root():
    root = Path(tempfile.mkdtemp(prefix="pupick_fuzz_"))
    _FUZZ_ROOT.append(root)
    yield root
    _FUZZ_ROOT.remove(root)
    shutil.rmtree(root, ignore_errors=True)


def _write(data: bytes | str, name: str) -> Path:
    """``data`` as ``name`` in a fresh directory under the module's fuzz root (the previous
    example's directory is removed first, so at most one exists at a time)."""
    root = _FUZZ_ROOT[-1]
    for old in root.iterdir():
        shutil.rmtree(old, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(dir=root))
    path = directory / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


def only_pupick_errors(call: Callable[[], object]) -> object | None:
    """Run a reader; a PupickError is fine, anything else fails the test (with its traceback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return call()
        except PupickError as exc:
            assert str(exc).strip() and "\n" not in str(exc), repr(str(exc))
            return None


def _usable_picks(picks: object) -> None:
    if picks is None:
        return
    assert isinstance(picks, Picks)
    assert np.isfinite(picks.x).all() and np.isfinite(picks.y).all()


# ------------------------------------------------------------------ STAR and coordinate files
#: inputs that once escaped as ValueError / KeyError / ZeroDivisionError (kept as regressions)
BAD_GROUP = (
    "data_optics\nloop_\n_rlnOpticsGroup\n_rlnMicrographPixelSize\nabc 1.5\n\n"
    "data_micrographs\nloop_\n_rlnMicrographName\n_rlnOpticsGroup\nm.mrc abc\n"
)
NO_GROUP = (
    "data_optics\nloop_\n_rlnMicrographPixelSize\n1.5\n\n"
    "data_micrographs\nloop_\n_rlnMicrographName\n_rlnOpticsGroup\nm.mrc 1\n"
)
BAD_DETECTOR = "data_\nloop_\n_rlnMicrographName\n_rlnDetectorPixelSize\n_rlnMagnification\nm.mrc abc 33333\n"
BAD_FOM = "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnAutopickFigureOfMerit\n1 2 abc\n"
HALF_ORIGIN = "data_\nloop_\n_rlnMicrographName\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnOriginX\nm.mrc 1 2 3\n"
TWICE = (
    "data_\nloop_\n_rlnMicrographName\n_rlnMicrographName\n_rlnCoordinateX\n_rlnCoordinateY\n"
    "m.mrc m.mrc 1 2\n"
)
NAN_XY = "data_\nloop_\n_rlnMicrographName\n_rlnCoordinateX\n_rlnCoordinateY\nmic_001.mrc nan 120\n"


@FUZZ
@given(data=st.one_of(star_text(), _content))
@example(data=BAD_FOM)
@example(data=HALF_ORIGIN)
@example(data=TWICE)
def test_read_coordinates_star(data) -> None:
    path = _write(data, "mic_001_manualpick.star")
    _usable_picks(only_pupick_errors(lambda: read_coordinates(path)))


@FUZZ
@given(data=st.one_of(table_text(), _content), fmt=st.sampled_from(["txt", None]))
def test_read_coordinates_text(data, fmt) -> None:
    path = _write(data, "labels.txt")
    _usable_picks(only_pupick_errors(lambda: read_coordinates(path, fmt)))


@FUZZ
@given(data=st.one_of(box_text(), _content))
def test_read_coordinates_box(data) -> None:
    path = _write(data, "mic_001.box")
    _usable_picks(only_pupick_errors(lambda: read_coordinates(path)))


@FUZZ
@given(data=st.one_of(star_text(), _content), suffix=st.sampled_from([".star", ".txt"]))
@example(data=BAD_GROUP, suffix=".star")
@example(data=NO_GROUP, suffix=".star")
@example(data=BAD_DETECTOR, suffix=".star")
def test_read_micrograph_list(data, suffix) -> None:
    path = _write(data, f"micrographs{suffix}")
    entries = only_pupick_errors(lambda: read_micrograph_list(path))
    if entries is not None:
        assert entries and len({e.name for e in entries}) == len(entries)
        assert all(e.pixel_size is None or (np.isfinite(e.pixel_size) and e.pixel_size > 0) for e in entries)


@FUZZ
@given(data=st.one_of(star_text(), _content))
@example(data=BAD_GROUP)
@example(data=BAD_DETECTOR)
@example(data=TWICE)
def test_relion_read_micrographs(data) -> None:
    path = _write(data, "micrographs_ctf.star")
    mics = only_pupick_errors(lambda: star_io.read_micrographs(path))
    if mics is not None:
        assert mics and len({m.entry.name for m in mics}) == len(mics)


@FUZZ
@given(data=st.one_of(star_text(), _content))
def test_relion_read_coordinate_index(data) -> None:
    path = _write(data, "manualpick.star")
    only_pupick_errors(lambda: star_io.read_coordinate_index(path))


@FUZZ
@given(data=st.one_of(star_text(), _content))
@example(data=TWICE)
@example(data=NAN_XY)
@example(data=BAD_FOM.replace("_rlnAutopickFigureOfMerit", "_rlnMicrographName"))
def test_relion_read_particle_labels(data) -> None:
    path = _write(data, "particles.star")
    mics = [
        star_io.RelionMicrograph(n, star_io.MicrographEntry(Path(n), pixel_size=p))
        for n, p in (("MotionCorr/job002/Movies/mic_001.mrc", 1.5), ("Micrographs/mic_002.mrc", None))
    ]
    _usable_picks(only_pupick_errors(lambda: star_io.read_particle_labels(path, mics)))


@FUZZ
@given(index=st.one_of(star_text(), _content), coords=st.one_of(star_text(), _content))
def test_relion_read_labels(index, coords) -> None:
    """A 4.0 index naming a coordinate file, both fuzzed (labels are read through both)."""
    path = _write(index, "manualpick.star")
    target = path.parent / "mic_001_manualpick.star"
    target.write_bytes(coords if isinstance(coords, bytes) else coords.encode("utf-8", "surrogatepass"))
    text = (
        f"data_coordinate_files\nloop_\n_rlnMicrographName\n_rlnMicrographCoordinates\n"
        f"MotionCorr/job002/Movies/mic_001.mrc {target}\n"
    )
    if isinstance(index, str) and "coordinate" not in index:
        path.write_text(text + index)
    mics = [
        star_io.RelionMicrograph(
            "MotionCorr/job002/Movies/mic_001.mrc",
            star_io.MicrographEntry(Path("MotionCorr/job002/Movies/mic_001.mrc")),
        )
    ]
    _usable_picks(only_pupick_errors(lambda: star_io.read_labels(str(path), mics)))


# ------------------------------------------------------------------ MRC files
SHAPE = (12, 16)
GOOD = (
    raw_mrc_header(SHAPE[1], SHAPE[0], 1, 2)
    + np.random.default_rng(0).normal(size=SHAPE).astype("<f4").tobytes()
)

#: (offset, struct format) of the header fields a reader trusts
FIELDS = [
    (0, "<i"),
    (4, "<i"),
    (8, "<i"),
    (12, "<i"),
    (28, "<i"),
    (32, "<i"),
    (36, "<i"),
    (40, "<f"),
    (44, "<f"),
    (76, "<f"),
    (88, "<i"),
    (92, "<i"),
    (104, "4s"),
    (208, "4s"),
    (212, "4s"),
]
#: values that mean something in those fields (modes, 0, a volume-stack space group, small sizes)
SPECIAL = [0, 1, 2, 3, 4, 6, 12, 16, 101, 401, 630, -1, 2**31 - 1]


@st.composite
def mutated_mrc(draw) -> bytes:
    raw = bytearray(GOOD)
    for offset, fmt in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        if fmt == "<i":
            value = draw(st.one_of(st.sampled_from(SPECIAL), st.integers(-(2**31), 2**31 - 1)))
        elif fmt == "<f":
            value = draw(st.floats(width=32, allow_nan=True, allow_infinity=True))
        else:
            value = draw(st.binary(min_size=4, max_size=4))
        struct.pack_into(fmt, raw, offset, value)
    for _ in range(draw(st.integers(0, 3))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    if cut is not None:
        raw = raw[:cut]
    return bytes(raw) + draw(st.binary(max_size=64))


def _usable_micrograph(mic: object) -> None:
    if mic is None:
        return
    assert isinstance(mic, Micrograph)
    assert mic.data.dtype == np.float32 and mic.data.ndim == 2 and np.isfinite(mic.data).all()
    assert mic.pixel_size is None or (np.isfinite(mic.pixel_size) and mic.pixel_size > 0)


def _with_fields(**values: int) -> bytes:
    raw = bytearray(GOOD)
    offsets = {"mx": 28, "mz": 36, "ispg": 88, "nsymbt": 92}
    for name, value in values.items():
        struct.pack_into("<i", raw, offsets[name], value)
    return bytes(raw)


@FUZZ
@given(data=st.one_of(mutated_mrc(), st.binary(max_size=4096)))
@example(data=_with_fields(ispg=401, mz=0))  # mrcfile divided by zero
@example(data=_with_fields(mx=0))  # pixel size cella/mx = inf
@example(data=_with_fields(nsymbt=2**30))  # a 1 GiB extended header mrcfile would allocate
def test_read_micrograph(data) -> None:
    path = _write(data, "fuzz.mrc")
    mic = only_pupick_errors(lambda: read_micrograph(path))
    _usable_micrograph(mic)
    header = only_pupick_errors(lambda: read_header(path))
    if mic is not None:
        assert header is not None and header[0] == mic.shape


def test_good_file_reads() -> None:
    """The fuzzer's starting point is a valid micrograph (else the mutations prove little)."""
    path = _write(GOOD, "good.mrc")
    mic = read_micrograph(path)
    assert mic.shape == SHAPE and mic.pixel_size == pytest.approx(1.5)


# ------------------------------------------------------------------ model files
#: text files a user might give as --model by mistake
TEXT_FILES = [
    "hello",
    "this is not a model\n",
    "data_\nloop_\n_rlnMicrographName #1\nmic.mrc\n",
    '{"format": "pupick-model", "format_version": 1}',
    "image_name\tx_coord\ty_coord\nmic\t1\t2\n",
    "PK",
    "\ufeffmodel.pupick\n",
]


def _damaged_weights(state: dict, how: str) -> dict:
    import torch

    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state = dict(state)
    if how in ("nan", "inf"):
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float(how)
    elif how == "shape":
        state[key] = torch.zeros(3, 5)
    elif how == "missing":
        del state[key]
    elif how == "extra":
        state["surplus.weight"] = torch.zeros(2)
    elif how == "not_tensor":
        state[key] = [1.0, 2.0]
    return state


def _model_bytes(info_overrides: dict | None = None, weights: str = "", **payload_overrides) -> bytes:
    import io
    import json

    import torch

    from pupick_ext.network.models import build_model

    torch.manual_seed(0)
    info = {
        "architecture": "conv31",
        "width": 4,
        "autoencoder": False,
        "pixel_size": 6.0,
        "downsample": 4.0,
        "particle_diameter": 150.0,
        "normalization": "standard",
        "gmm": None,
        "recommended_threshold": 0.0,
        **(info_overrides or {}),
    }
    payload = {
        "format": "pupick-model",
        "format_version": 1,
        "info": json.dumps(info),
        "state_dict": {k: v.detach() for k, v in build_model("conv31", 4).state_dict().items()},
        **payload_overrides,
    }
    if weights:
        payload["state_dict"] = _damaged_weights(payload["state_dict"], weights)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


GOOD_MODEL = _model_bytes()
_json_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=2),
)
INFO_KEYS = [
    "architecture",
    "width",
    "autoencoder",
    "pixel_size",
    "downsample",
    "particle_diameter",
    "normalization",
    "gmm",
    "recommended_threshold",
]


@st.composite
def model_file(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "info", "payload", "text", "random", "weights"]))
    if kind == "text":  # what a user may pass by mistake: a note, a STAR or JSON file, a path
        text = draw(st.one_of(st.text(max_size=60), st.sampled_from(TEXT_FILES)))
        return text.encode("utf-8", "surrogatepass")
    if kind == "random":
        return draw(st.binary(max_size=draw(st.sampled_from([8, 64, 600]))))
    if kind == "weights":  # a well-formed archive whose weights are damaged (NaN, wrong shape, missing)
        how = draw(st.sampled_from(["nan", "inf", "shape", "missing", "extra", "not_tensor"]))
        return _model_bytes(weights=how)
    if kind == "info":  # a well-formed archive whose metadata is wrong
        overrides = draw(st.dictionaries(st.sampled_from(INFO_KEYS), _json_value, max_size=3))
        return _model_bytes(overrides)
    if kind == "payload":
        key = draw(st.sampled_from(["format", "format_version", "info", "state_dict"]))
        value = draw(st.one_of(_json_value, st.just({}), st.just("{}"), st.just("[1]")))
        return _model_bytes(**{key: value})
    raw = bytearray(GOOD_MODEL)  # a damaged archive
    for _ in range(draw(st.integers(1, 4))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return bytes(raw[:cut] if cut is not None else raw)


@settings(
    max_examples=int(os.environ.get("PUPICK_FUZZ_EXAMPLES", "150")) // 2,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    derandomize=not os.environ.get("PUPICK_FUZZ_RANDOM"),
)
@given(data=model_file())
@example(data=_model_bytes({"width": 10**7}))  # would allocate terabytes of weights
@example(data=_model_bytes({"particle_diameter": None}))
@example(data=b"hello")  # 5 bytes: KeyError from the unpickler
@example(data=b"this is not a model\n")  # IndexError from the unpickler
@example(data=b"\x80\x02K")  # a pickle protocol byte, then nothing: struct.error
@example(data=_model_bytes(weights="nan"))  # a diverged training
def test_load_model(data) -> None:
    """A damaged or doctored model file gives a ModelError, or a model that can be used."""
    from pupick_ext import ModelError, PickerModel, load_model

    path = _write(data, "model.pupick")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(path)
    except ModelError as exc:
        assert "model.pupick" in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(model, PickerModel)
    assert model.particle_radius_px > 0 and np.isfinite(model.particle_radius_px)
    assert model.info.get("normalization", "standard") in ("gmm", "standard")
