"""Reading RELION micrograph, coordinate and particle STAR files for the External job."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pupick_ext import InputError, Picks, write_coordinate_star
from relion_wrapper import star_io

DATA = Path(__file__).parent.parent / "data" / "relion"

MICS_31 = """
# version 30001

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
"""


@pytest.fixture()
def mics_star(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "CtfFind" / "job003" / "micrographs_ctf.star"
    path.parent.mkdir(parents=True)
    path.write_text(MICS_31)
    return path


def test_read_micrographs_31(mics_star: Path) -> None:
    mics = star_io.read_micrographs(mics_star)
    assert [m.relion_name for m in mics] == [
        "MotionCorr/job002/Movies/mic_001.mrc",
        "MotionCorr/job002/Movies/mic_002.mrc",
        "Micrographs/mic_003.mrc",
    ]
    assert [m.entry.name for m in mics] == ["mic_001", "mic_002", "mic_003"]
    assert [m.entry.pixel_size for m in mics] == [1.5, 1.5, 1.0]  # the micrograph's, not the movie's
    assert str(mics[0].entry.path) == "MotionCorr/job002/Movies/mic_001.mrc"


def test_read_micrographs_30() -> None:
    mics = star_io.read_micrographs(DATA / "micrographs_v30.star")
    assert [m.entry.name for m in mics] == ["mic_001", "mic_002"]
    assert mics[0].entry.pixel_size == pytest.approx(14.0)  # 1e4 * 14 um / 10000x


def test_duplicate_stems_get_path_names(tmp_path: Path) -> None:
    star = tmp_path / "m.star"
    star.write_text(
        "data_micrographs\nloop_\n_rlnMicrographName\nA/job001/Movies/x.mrc\nA/job001/Other/x.mrc\n"
    )
    assert [m.entry.name for m in star_io.read_micrographs(star)] == ["Movies/x", "Other/x"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "file not found"),
        ("data_micrographs\nloop_\n_rlnMicrographName\n", "lists no micrographs"),
        ("data_particles\nloop_\n_rlnCoordinateX\n1\n", "no data_micrographs table"),
        ("data_micrographs\nloop_\n_rlnMicrographName\na.mrc\na.mrc\n", "more than once"),
    ],
)
def test_bad_micrograph_files(tmp_path: Path, content: str | None, problem: str) -> None:
    star = tmp_path / "m.star"
    if content is not None:
        star.write_text(content)
    with pytest.raises(InputError, match=problem) as info:
        star_io.read_micrographs(star)
    assert str(star) in str(info.value)


def _write_labels(path: str, xs: list[float]) -> None:
    write_coordinate_star(Picks.for_one("x", np.array(xs), np.array(xs) + 1), path)


def test_labels_from_31_suffix_node(mics_star: Path) -> None:
    mics = star_io.read_micrographs(mics_star)
    node = Path("ManualPick/job004/coords_suffix_manualpick.star")
    node.parent.mkdir(parents=True)
    node.write_text("CtfFind/job003/micrographs_ctf.star\n")
    _write_labels("ManualPick/job004/Movies/mic_001_manualpick.star", [10, 20, 30])
    _write_labels("ManualPick/job004/Micrographs/mic_003_manualpick.star", [40])
    labels = star_io.read_labels(str(node), mics)
    assert sorted(labels.names) == ["mic_001", "mic_003"]
    assert labels.for_micrograph("mic_001").x.tolist() == [10, 20, 30]
    assert labels.for_micrograph("mic_003").y.tolist() == [41]


def test_labels_from_4_index(mics_star: Path) -> None:
    mics = star_io.read_micrographs(mics_star)
    node = Path("ManualPick/job004/manualpick.star")
    node.parent.mkdir(parents=True)
    shutil.copy(DATA / "manualpick_v4.star", node)
    _write_labels("ManualPick/job004/Movies/mic_001_manualpick.star", [1, 2])
    _write_labels("ManualPick/job004/Micrographs/mic_003_manualpick.star", [3, 4, 5])
    labels = star_io.read_labels(str(node), mics)
    assert len(labels.for_micrograph("mic_001")) == 2 and len(labels.for_micrograph("mic_003")) == 3


def test_particles_add_back_origin_shifts(mics_star: Path) -> None:
    """RELION re-centres with ``coordinate - origin``: the label is the particle's centre."""
    mics = star_io.read_micrographs(mics_star)  # micrograph pixel size 1.5 A
    labels = star_io.read_particle_labels(DATA / "particles_v31.star", mics)
    assert labels.micrograph.tolist() == ["mic_001", "mic_001", "mic_002"]  # mic_999 is not an input
    np.testing.assert_allclose(labels.x, [100 - 3 / 1.5, 300, 500 + 1.5 / 1.5])
    np.testing.assert_allclose(labels.y, [200 + 6 / 1.5, 400, 600 - 1.5 / 1.5])


def test_particles_without_origins(tmp_path: Path, mics_star: Path) -> None:
    star = tmp_path / "parts.star"
    star.write_text(
        "data_particles\nloop_\n_rlnMicrographName\n_rlnCoordinateX\n_rlnCoordinateY\n"
        "Movies/mic_002.mrc 5 6\n"
    )
    labels = star_io.read_particle_labels(star, star_io.read_micrographs(mics_star))
    assert (labels.micrograph.tolist(), labels.x.tolist(), labels.y.tolist()) == (["mic_002"], [5], [6])


def test_suffix_of_index() -> None:
    assert star_io.suffix_of_index("ManualPick/job004/coords_suffix_manualpick.star") == "manualpick"
    with pytest.raises(InputError):
        star_io.suffix_of_index("ManualPick/job004/manualpick.star")
