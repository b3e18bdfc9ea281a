"""RELION layout rules: coordinate paths, version detection, index and output-node files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import starfile

from relion_wrapper import nodes

DATA = Path(__file__).parent.parent / "data" / "relion"
JOB = "External/job012/"
MICS = [
    "MotionCorr/job002/Movies/mic_001.mrc",
    "MotionCorr/job002/Movies/mic_002.mrc",
    "Micrographs/mic_003.mrc",
]


@pytest.mark.parametrize(
    ("micrograph", "job", "expected"),
    [
        (
            "MotionCorr/job002/Movies/mic_020.mrc",
            "External/job001/",
            "External/job001/Movies/mic_020_pupick.star",
        ),
        ("Micrographs/mic_020.mrc", "External/job001/", "External/job001/Micrographs/mic_020_pupick.star"),
        ("Micrographs/mic_020.mrc", "External/job001", "External/job001/Micrographs/mic_020_pupick.star"),
        (
            "CtfFind/job003/Movies/sub/dir/a.b.mrc",
            "External/job001/",
            "External/job001/Movies/sub/dir/a.b_pupick.star",
        ),
        ("mic_020.mrc", "External/job001/", "External/job001/mic_020_pupick.star"),
        # the first /jobNNN/ counts, wherever it is; a name starting with job001/ has no slash before it
        ("a/MotionCorr/job002/x.mrc", "External/job001/", "External/job001/x_pupick.star"),
        ("job002/x.mrc", "External/job001/", "External/job001/job002/x_pupick.star"),
        ("Import/jobs/x.mrc", "External/job001/", "External/job001/Import/jobs/x_pupick.star"),
    ],
)
def test_coordinate_path_rule(micrograph: str, job: str, expected: str) -> None:
    assert nodes.coordinate_path(job, micrograph, "pupick") == expected


def test_decompose_pipeline_name() -> None:
    assert nodes.decompose_pipeline_name("MotionCorr/job002/Movies/mic.mrc") == (
        "MotionCorr/",
        "job002/",
        "Movies/mic.mrc",
    )
    assert nodes.decompose_pipeline_name("Micrographs/mic.mrc") == ("", "", "Micrographs/mic.mrc")


def test_index_and_node_paths() -> None:
    assert (
        nodes.index_path("External/job012/", "3.1", "pupick") == "External/job012/coords_suffix_pupick.star"
    )
    assert nodes.index_path("./External/job012", "4", "pupick") == "External/job012/autopick.star"
    assert nodes.COORDS_NODE_TYPE["3.1"] == "2"
    assert nodes.COORDS_NODE_TYPE["4"] == "MicrographsCoords.star.relion.autopick"
    assert nodes.COORDS_NODE_TYPE["5"] == "MicrographCoordsGroup.star.relion.autopick"


def _same_star(produced: str, expected_file: Path, tmp_path: Path) -> None:
    """Both files hold the same blocks, columns (in order) and values."""
    out = tmp_path / expected_file.name
    out.write_text(produced)
    got = starfile.read(out, always_dict=True)
    want = starfile.read(expected_file, always_dict=True)
    assert list(got) == list(want)
    for block in want:
        assert list(got[block].columns) == list(want[block].columns)
        assert got[block].astype(str).values.tolist() == want[block].astype(str).values.tolist()


@pytest.mark.parametrize("version", ["3.1", "4", "5"])
def test_output_nodes_file_matches_hand_checked(version: str, tmp_path: Path) -> None:
    folder = DATA / "expected" / {"3.1": "v31", "4": "v4", "5": "v5"}[version]
    node = nodes.index_path(JOB, version, "pupick")
    text = nodes.output_nodes_text([(node, nodes.COORDS_NODE_TYPE[version])], version)
    _same_star(text, folder / "RELION_OUTPUT_NODES.star", tmp_path)
    assert text.splitlines()[1] == (folder / "RELION_OUTPUT_NODES.star").read_text().splitlines()[1]


@pytest.mark.parametrize("version", ["4", "5"])
def test_autopick_index_matches_hand_checked(version: str, tmp_path: Path) -> None:
    rows = [(m, nodes.coordinate_path(JOB, m, "pupick")) for m in MICS]
    _same_star(
        nodes.autopick_index_text(rows, version),
        DATA / "expected" / f"v{version}" / "autopick.star",
        tmp_path,
    )


def test_suffix_index_matches_hand_checked() -> None:
    expected = (DATA / "expected" / "v31" / "coords_suffix_pupick.star").read_text()
    assert nodes.suffix_index_text("CtfFind/job003/micrographs_ctf.star") == expected
    assert (
        expected.split()[0] == "CtfFind/job003/micrographs_ctf.star"
    )  # RELION reads it with `in >> fn_star`


def test_blank_names_are_quoted() -> None:
    text = nodes.autopick_index_text([("Micrographs/a b.mrc", "External/job001/Micrographs/a b_pupick.star")])
    assert '"Micrographs/a b.mrc"' in text


def _project(tmp_path: Path, pipeline: str | None = None, coords: str | None = None) -> Path:
    if pipeline:
        shutil.copy(DATA / pipeline, tmp_path / "default_pipeline.star")
    if coords:
        target = tmp_path / coords
        target.parent.mkdir(parents=True, exist_ok=True)
        if coords.endswith("manualpick.star") and not coords.split("/")[-1].startswith("coords_suffix"):
            shutil.copy(DATA / "manualpick_v4.star", target)
        else:
            target.write_text("CtfFind/job003/micrographs_ctf.star\n")
    return tmp_path


@pytest.mark.parametrize(
    ("pipeline", "coords", "expected"),
    [
        ("default_pipeline_v31.star", None, "3.1"),
        ("default_pipeline_v4.star", None, "4"),
        ("default_pipeline_v5.star", None, "5"),
        (None, "ManualPick/job004/coords_suffix_manualpick.star", "3.1"),
        ("default_pipeline_v4.star", "ManualPick/job004/manualpick.star", "4"),
        ("default_pipeline_v5.star", "ManualPick/job004/manualpick.star", "5"),
        # the input coordinates win over the pipeline
        ("default_pipeline_v4.star", "ManualPick/job004/coords_suffix_manualpick.star", "3.1"),
    ],
)
def test_detect_version(tmp_path: Path, pipeline: str | None, coords: str | None, expected: str) -> None:
    project = _project(tmp_path, pipeline, coords)
    version, why = nodes.detect_version(project, "External/job006/", coords)
    assert version == expected, why


def test_detect_version_from_job_star(tmp_path: Path) -> None:
    job = tmp_path / "External" / "job006"
    job.mkdir(parents=True)
    (job / "job.star").write_text("\n# version 30001\n\ndata_job\n\n_rlnJobType 99\n_rlnJobIsContinue 0\n")
    assert nodes.detect_version(tmp_path, "External/job006/")[0] == "3.1"
    (job / "job.star").write_text("\n# version 50001\n\ndata_job\n\n_rlnJobTypeLabel relion.external\n")
    assert nodes.detect_version(tmp_path, "External/job006/")[0] == "5"


def test_detect_version_without_project_assumes_5(tmp_path: Path) -> None:
    version, why = nodes.detect_version(tmp_path, "External/job006/")
    assert version == "5" and "assuming" in why


@pytest.mark.parametrize(
    ("forced", "expected"),
    [("3.1", "3.1"), ("3", "3.1"), ("4", "4"), ("4.0", "4"), ("5.0", "5"), ("relion-5", "5")],
)
def test_forced_version(tmp_path: Path, forced: str, expected: str) -> None:
    _project(tmp_path, "default_pipeline_v31.star")
    assert nodes.detect_version(tmp_path, "External/job006/", None, forced) == (expected, "--relion_version")


def test_forced_version_unknown(tmp_path: Path) -> None:
    from pupick_ext import SettingsError

    with pytest.raises(SettingsError, match="3.1, 4 or 5"):
        nodes.detect_version(tmp_path, "External/job006/", None, "2.1")
