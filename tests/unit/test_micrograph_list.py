"""Micrograph lists: RELION 3.0 / 3.1+ STAR files, directories, text files, single MRCs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pupick_ext import InputError, MicrographEntry, read_micrograph_list

DATA = Path(__file__).resolve().parent.parent / "data" / "relion"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_mrc) -> Path:
    """A RELION-like project directory (the current directory) with three micrographs."""
    for name in ("mic_001", "mic_002", "mic_003"):
        write_mrc(
            tmp_path / "MotionCorr" / "job002" / "Movies" / f"{name}.mrc",
            np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32),
            pixel_size=0.9,
        )
    monkeypatch.chdir(tmp_path)
    return tmp_path


V31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographOriginalPixelSize #3
_rlnVoltage #4
_rlnMicrographPixelSize #5
opticsGroup1 1 0.5 300 1.0
opticsGroup2 2 0.7 300 1.4

# version 30001

data_micrographs

loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
_rlnCtfMaxResolution #3
MotionCorr/job002/Movies/mic_001.mrc 1 4.5
MotionCorr/job002/Movies/mic_002.mrc 2 3.9
MotionCorr/job002/Movies/mic_003.mrc 1 5.0
"""


def test_relion31_star_with_optics(project: Path) -> None:
    star = project / "CtfFind" / "job003" / "micrographs_ctf.star"
    star.parent.mkdir(parents=True)
    star.write_text(V31)
    entries = read_micrograph_list(star)
    assert [e.name for e in entries] == ["mic_001", "mic_002", "mic_003"]
    assert [e.pixel_size for e in entries] == [1.0, 1.4, 1.0]  # per optics group, micrograph pixel
    assert entries[0].path == Path("MotionCorr/job002/Movies/mic_001.mrc")  # relative to the project
    assert all(e.path.exists() for e in entries)
    assert all(isinstance(e, MicrographEntry) for e in entries)


def test_relion31_star_with_only_the_original_pixel_size(project: Path) -> None:
    star = project / "mics.star"
    star.write_text(
        V31.replace("_rlnMicrographPixelSize #5", "_rlnImageSize #5")
        .replace(" 1.0\n", " 64\n")
        .replace(" 1.4\n", " 64\n")
    )
    entries = read_micrograph_list(star)
    assert [e.pixel_size for e in entries] == [0.5, 0.7, 0.5]


def test_relion30_star_uses_detector_pixel_and_magnification() -> None:
    entries = read_micrograph_list(DATA / "micrographs_v30.star")
    assert [e.name for e in entries] == ["mic_001", "mic_002"]
    # 14 um detector pixel at 10000x magnification: 14e4 / 1e4 = 14 A/px
    assert [e.pixel_size for e in entries] == [pytest.approx(14.0), pytest.approx(14.0)]
    assert entries[0].path == Path("MotionCorr/job002/Movies/mic_001.mrc")


def test_star_without_pixel_size_leaves_it_unknown(tmp_path: Path) -> None:
    star = tmp_path / "plain.star"
    star.write_text("data_\n\nloop_\n_rlnMicrographName #1\na.mrc\nb.mrc\n")
    entries = read_micrograph_list(star)
    assert [e.name for e in entries] == ["a", "b"]
    assert [e.pixel_size for e in entries] == [None, None]


def test_star_paths_fall_back_to_the_list_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_mrc
) -> None:
    folder = tmp_path / "elsewhere"
    write_mrc(folder / "m.mrc", np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32))
    (folder / "list.star").write_text("data_\n\nloop_\n_rlnMicrographName #1\nm.mrc\n")
    monkeypatch.chdir(tmp_path)
    (entry,) = read_micrograph_list(folder / "list.star")
    assert entry.path == folder / "m.mrc"


def test_directory(tmp_path: Path, write_mrc) -> None:
    for name in ("b", "a", "c"):
        write_mrc(tmp_path / f"{name}.mrc", np.ones((4, 4), np.float32))
    (tmp_path / "notes.txt").write_text("not a micrograph")
    entries = read_micrograph_list(tmp_path)
    assert [e.name for e in entries] == ["a", "b", "c"]
    assert entries[0].path == tmp_path / "a.mrc"


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=str(tmp_path)):
        read_micrograph_list(tmp_path)


def test_text_file(project: Path) -> None:
    listing = project / "list.txt"
    listing.write_text(
        "# my micrographs\nMotionCorr/job002/Movies/mic_002.mrc\n\n  MotionCorr/job002/Movies/mic_001.mrc  \n"
    )
    entries = read_micrograph_list(listing)
    assert [e.name for e in entries] == ["mic_002", "mic_001"]
    assert entries[0].pixel_size is None  # taken from the header later


def test_single_mrc_and_a_list_of_paths(project: Path) -> None:
    one = read_micrograph_list(Path("MotionCorr/job002/Movies/mic_003.mrc"))
    assert [e.name for e in one] == ["mic_003"]
    many = read_micrograph_list(
        [
            "MotionCorr/job002/Movies/mic_003.mrc",
            "MotionCorr/job002/Movies/mic_001.mrc",
            "MotionCorr/job002/Movies/mic_003.mrc",
        ]
    )
    assert [e.name for e in many] == ["mic_003", "mic_001"]  # the same file twice is listed once


def test_duplicated_names_are_an_error(tmp_path: Path) -> None:
    listing = tmp_path / "dup.txt"
    listing.write_text("run1/mic_001.mrc\nrun2/mic_001.mrc\n")
    with pytest.raises(InputError) as info:
        read_micrograph_list(listing)
    assert "dup.txt" in str(info.value) and "mic_001" in str(info.value)
    star = tmp_path / "dup.star"
    star.write_text("data_micrographs\n\nloop_\n_rlnMicrographName #1\nrun1/mic_001.mrc\nrun2/mic_001.mrc\n")
    with pytest.raises(InputError, match="dup.star"):
        read_micrograph_list(star)


def test_missing_micrograph_name_column_names_the_file(tmp_path: Path) -> None:
    star = tmp_path / "nomics.star"
    star.write_text("data_micrographs\n\nloop_\n_rlnCtfImage #1\n_rlnDefocusU #2\na.ctf 10000\n")
    with pytest.raises(InputError) as info:
        read_micrograph_list(star)
    assert "nomics.star" in str(info.value) and "_rlnMicrographName" in str(info.value)


def test_wrong_data_block(tmp_path: Path) -> None:
    """Only an optics table: the error names the file, the wanted column and what was found."""
    star = tmp_path / "optics_only.star"
    star.write_text("data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnMicrographPixelSize #2\n1 1.0\n")
    with pytest.raises(InputError) as info:
        read_micrograph_list(star)
    message = str(info.value)
    assert "optics_only.star" in message and "_rlnMicrographName" in message and "data_optics" in message


def test_micrographs_in_an_unusual_block_are_found(tmp_path: Path) -> None:
    star = tmp_path / "odd.star"
    star.write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnMicrographPixelSize #2\n1 2.5\n\n"
        "data_movies\n\nloop_\n_rlnMicrographName #1\n_rlnOpticsGroup #2\nx.mrc 1\n"
    )
    (entry,) = read_micrograph_list(star)
    assert entry.name == "x" and entry.pixel_size == 2.5


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.star", "", "empty"),
        ("garbage.star", "hello world\n", "no data table"),
        ("binary.txt", bytes(range(256)), "binary"),
        ("comments.txt", "# nothing here\n\n", "no micrographs"),
        ("header_only.star", "data_\n\nloop_\n_rlnMicrographName #1\n", ""),
    ],
)
def test_bad_lists_raise_input_error(tmp_path: Path, name: str, content: str | bytes, problem: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError) as info:
        read_micrograph_list(path)
    assert name in str(info.value) and problem in str(info.value)


def test_missing_list_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_micrograph_list(tmp_path / "nope.star")
