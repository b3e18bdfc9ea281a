"""The External job end to end on tiny synthetic projects (engine on CPU, RELION not needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from pupick_ext import (
    PreprocessSettings,
    TrainSettings,
    generate_demo_data,
    read_coordinates,
    train,
    write_coordinate_star,
)
from relion_wrapper import cli, nodes, workflow

DATA = Path(__file__).parent.parent / "data" / "relion"
JOB = "External/job012/"
QUICK = ["--epochs", "1", "--steps_per_epoch", "2", "--j", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for two steps: useless for picking well, fine for the protocol."""
    root = tmp_path_factory.mktemp("model")
    demo = generate_demo_data(root / "demo", n_micrographs=3, shape=(256, 256), seed=1)
    result = train(
        demo.micrographs,
        demo.truth,
        PreprocessSettings(),
        TrainSettings(
            particle_diameter=demo.particle_diameter, epochs=1, steps_per_epoch=2, device="cpu", num_threads=1
        ),
        root / "train",
    )
    return Path(result.model_path)


def make_project(root: Path, n: int, pipeline: str | None = "default_pipeline_v31.star", seed: int = 0):
    """A RELION-like project: MotionCorr/job002/Movies/*.mrc and CtfFind/job003/micrographs_ctf.star."""
    demo = generate_demo_data(root / "demo", n_micrographs=n, shape=(256, 256), seed=seed)
    movies = root / "MotionCorr" / "job002" / "Movies"
    movies.mkdir(parents=True, exist_ok=True)
    for entry in demo.micrographs:
        shutil.copy(entry.path, movies / entry.path.name)
    blocks = starfile.read(demo.micrographs_star, always_dict=True)
    blocks["micrographs"]["rlnMicrographName"] = [
        f"MotionCorr/job002/Movies/{Path(n).name}" for n in blocks["micrographs"]["rlnMicrographName"]
    ]
    star = root / "CtfFind" / "job003" / "micrographs_ctf.star"
    star.parent.mkdir(parents=True, exist_ok=True)
    starfile.write(blocks, star)
    if pipeline:
        shutil.copy(DATA / pipeline, root / "default_pipeline.star")
    return demo


def manual_picks_31(root: Path, demo, per_mic: int = 10) -> str:
    """Manual picking output as RELION 3.1 writes it, from the first micrographs' truth."""
    node = root / "ManualPick" / "job004" / "coords_suffix_manualpick.star"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_text("CtfFind/job003/micrographs_ctf.star\n")
    for name in demo.truth.names[:2]:
        one = demo.truth.for_micrograph(name)
        write_coordinate_star(
            one.select(np.arange(len(one)) < per_mic),
            root / "ManualPick" / "job004" / "Movies" / f"{name}_manualpick.star",
        )
    return "ManualPick/job004/coords_suffix_manualpick.star"


def run_job(*extra: str) -> int:
    return cli.main(["--o", JOB, "--in_mics", "CtfFind/job003/micrographs_ctf.star", *extra])


def files_in(job: Path) -> list[str]:
    return sorted(str(p.relative_to(job)) for p in job.rglob("*") if p.is_file())


def no_partial_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]


def test_train_and_extract_relion31(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    demo = make_project(tmp_path, 3)
    coords = manual_picks_31(tmp_path, demo)
    rc = run_job("--in_coords", coords, "--diameter", str(demo.particle_diameter), *QUICK)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err == ""
    job = tmp_path / JOB
    made = files_in(job)
    assert [m for m in made if m.startswith("RELION_JOB")] == ["RELION_JOB_EXIT_SUCCESS"]
    for name in ("mic_000", "mic_001", "mic_002"):
        assert f"Movies/{name}_pupick.star" in made
        picks = read_coordinates(job / "Movies" / f"{name}_pupick.star", fmt="star")
        assert np.isfinite(picks.score).all()
    assert {
        "model.pupick",
        "coords_suffix_pupick.star",
        "RELION_OUTPUT_NODES.star",
        "pupick_runs.json",
        "training_curve.png",
        "threshold_table.png",
        "picks_mic_000.png",
    } <= set(made)
    assert (job / "coords_suffix_pupick.star").read_text() == "CtfFind/job003/micrographs_ctf.star\n"
    nodes_table = starfile.read(job / "RELION_OUTPUT_NODES.star", always_dict=True)["output_nodes"]
    assert nodes_table.values.tolist() == [["External/job012/coords_suffix_pupick.star", 2]]
    header = starfile.read(job / "Movies" / "mic_000_pupick.star", always_dict=True)[""].columns.tolist()
    assert header[:2] == ["rlnCoordinateX", "rlnCoordinateY"]
    assert {"rlnAutopickFigureOfMerit", "rlnClassNumber", "rlnAnglePsi"} <= set(header)
    assert "RELION 3.1 output layout (from the layout of ManualPick" in out
    n_labels = sum(min(10, len(demo.truth.for_micrograph(n))) for n in demo.truth.names[:2])
    assert f"Training labels: {n_labels} particles on 2 micrographs" in out
    assert no_partial_files(tmp_path)


@pytest.mark.parametrize("version", ["4", "5"])
def test_extract_relion4_and_5_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path, version: str
) -> None:
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, 2, f"default_pipeline_v{version}.star")
    assert run_job("--mode", "extract", "--model", str(tiny_model), "--device", "cpu", "--pictures", "0") == 0
    job = tmp_path / JOB
    index = starfile.read(job / "autopick.star", always_dict=True)["coordinate_files"]
    assert index.values.tolist() == [
        ["MotionCorr/job002/Movies/mic_000.mrc", "External/job012/Movies/mic_000_pupick.star"],
        ["MotionCorr/job002/Movies/mic_001.mrc", "External/job012/Movies/mic_001_pupick.star"],
    ]
    for path in index["rlnMicrographCoordinates"]:
        assert (tmp_path / path).is_file()
    out_nodes = starfile.read(job / "RELION_OUTPUT_NODES.star", always_dict=True)["output_nodes"]
    assert out_nodes.columns.tolist() == ["rlnPipeLineNodeName", "rlnPipeLineNodeTypeLabel"]
    assert out_nodes.values.tolist() == [["External/job012/autopick.star", nodes.COORDS_NODE_TYPE[version]]]
    assert not (job / "coords_suffix_pupick.star").exists()


def test_incremental_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Scheme re-runs the job as micrographs arrive: only new ones are picked; the index lists all."""
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, 5, "default_pipeline_v5.star")
    star = tmp_path / "CtfFind" / "job003" / "micrographs_ctf.star"
    full = starfile.read(star, always_dict=True)
    first = dict(full, micrographs=full["micrographs"].iloc[:3].reset_index(drop=True))
    starfile.write(first, star)
    args = ["--mode", "extract", "--model", str(tiny_model), "--device", "cpu", "--pictures", "1"]
    assert run_job(*args) == 0
    job = tmp_path / JOB
    before = {p: p.stat().st_mtime_ns for p in job.glob("Movies/*_pupick.star")}
    assert len(before) == 3
    capsys.readouterr()

    starfile.write(full, star)  # two more micrographs arrived
    time.sleep(0.01)
    assert run_job(*args) == 0
    out = capsys.readouterr().out
    assert "Picking 2 micrograph(s); 3 already have coordinates from an earlier run" in out
    assert "mic_003.mrc: " in out and "mic_000.mrc: " not in out
    assert {p: p.stat().st_mtime_ns for p in before} == before  # finished files untouched
    index = starfile.read(job / "autopick.star", always_dict=True)["coordinate_files"]
    assert (
        len(index) == 5
        and index["rlnMicrographName"].tolist() == full["micrographs"]["rlnMicrographName"].tolist()
    )
    assert [p.name for p in job.glob("RELION_JOB_*")] == ["RELION_JOB_EXIT_SUCCESS"]

    assert run_job(*args) == 0  # nothing new: still a success, nothing picked
    assert "Picking 0 micrograph(s); 5 already have" in capsys.readouterr().out


def test_rerun_skips_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    demo = make_project(tmp_path, 2)
    coords = manual_picks_31(tmp_path, demo)
    (tmp_path / JOB).mkdir(parents=True)
    shutil.copy(tiny_model, tmp_path / JOB / "model.pupick")
    assert run_job("--in_coords", coords, "--diameter", "150", *QUICK) == 0
    out = capsys.readouterr().out
    assert "training skipped" in out and "Training labels" not in out
    assert not (tmp_path / JOB / "training").exists()


def test_abort_between_micrographs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    """RELION_JOB_ABORT_NOW appears after the first micrograph: stop, keep only finished files."""
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, 4, "default_pipeline_v5.star")
    job = tmp_path / JOB
    real_write = workflow.write_coordinate_star

    def write_then_abort(picks, path):
        real_write(picks, path)
        (job / "RELION_JOB_ABORT_NOW").touch()  # the user pressed Abort in the GUI

    monkeypatch.setattr(workflow, "write_coordinate_star", write_then_abort)
    assert run_job("--mode", "extract", "--model", str(tiny_model), "--device", "cpu") == 2
    assert sorted(p.name for p in job.glob("RELION_JOB_*")) == ["RELION_JOB_EXIT_ABORTED"]
    assert [p.name for p in job.glob("Movies/*")] == ["mic_000_pupick.star"]
    index = starfile.read(job / "autopick.star", always_dict=True)["coordinate_files"]
    assert index["rlnMicrographName"].tolist() == ["MotionCorr/job002/Movies/mic_000.mrc"]
    assert no_partial_files(tmp_path)

    monkeypatch.setattr(workflow, "write_coordinate_star", real_write)  # "Continue" finishes the rest
    assert run_job("--mode", "extract", "--model", str(tiny_model), "--device", "cpu") == 0
    assert len(list(job.glob("Movies/*_pupick.star"))) == 4


def _executable() -> list[str]:
    found = shutil.which("pupick-relion")
    return [found] if found else [sys.executable, "-m", "relion_wrapper.cli"]


@pytest.mark.slow
def test_abort_during_training_subprocess(tmp_path: Path) -> None:
    """Abort as RELION does it, from outside, while the job trains: it stops within seconds."""
    demo = make_project(tmp_path, 2, seed=1)  # a particle on each micrograph: one trains, one is held out
    coords = manual_picks_31(tmp_path, demo)
    job = tmp_path / JOB
    job.mkdir(parents=True)
    command = [
        *_executable(),
        "--o",
        JOB,
        "--in_mics",
        "CtfFind/job003/micrographs_ctf.star",
        "--in_coords",
        coords,
        "--diameter",
        "150",
        "--epochs",
        "50",
        "--steps_per_epoch",
        "1000",
        "--device",
        "cpu",
        "--j",
        "1",
    ]
    with open(job / "run.out", "w") as out, open(job / "run.err", "w") as err:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 120
            while "epoch 1/50" not in (job / "run.out").read_text() and time.monotonic() < deadline:
                assert process.poll() is None, (job / "run.err").read_text()
                time.sleep(0.2)
            (job / "RELION_JOB_ABORT_NOW").touch()
            asked = time.monotonic()
            process.wait(timeout=60)
            stopped_after = time.monotonic() - asked
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 2
    assert stopped_after < 30
    assert sorted(p.name for p in job.glob("RELION_JOB_*")) == ["RELION_JOB_EXIT_ABORTED"]
    assert not (job / "model.pupick").exists()
    assert (job / "run.err").read_text() == ""
    assert "Aborted" in (job / "run.out").read_text()
    assert no_partial_files(tmp_path)


def test_train_from_particles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labels from a particles STAR (e.g. a selected 2D class), shifts added back."""
    monkeypatch.chdir(tmp_path)
    demo = make_project(tmp_path, 2, seed=1)  # a particle on each micrograph: one trains, one is held out
    truth = demo.truth
    shift = 4.5  # A; the stored coordinate is centre + shift/pixel size, as after re-centring
    parts = pd.DataFrame(
        {
            "rlnCoordinateX": truth.x + shift / demo.pixel_size,
            "rlnCoordinateY": truth.y - shift / demo.pixel_size,
            "rlnMicrographName": [f"MotionCorr/job002/Movies/{n}.mrc" for n in truth.micrograph],
            "rlnOriginXAngst": shift,
            "rlnOriginYAngst": -shift,
            "rlnOpticsGroup": 1,
        }
    )
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnImagePixelSize": [demo.pixel_size * 2],
            "rlnImageSize": [64],
        }
    )
    (tmp_path / "Select" / "job009").mkdir(parents=True)
    starfile.write({"optics": optics, "particles": parts}, tmp_path / "Select" / "job009" / "particles.star")
    assert (
        run_job("--in_parts", "Select/job009/particles.star", "--diameter", "150", "--mode", "train", *QUICK)
        == 0
    )
    out = capsys.readouterr().out
    assert (
        f"Labels from Select/job009/particles.star: {len(truth)} particles (origin shifts added back)" in out
    )
    job = tmp_path / JOB
    assert (job / "model.pupick").is_file()
    assert not list(job.glob("Movies/*")) and not (job / "RELION_OUTPUT_NODES.star").exists()
    assert [p.name for p in job.glob("RELION_JOB_*")] == ["RELION_JOB_EXIT_SUCCESS"]


def test_extract_with_missing_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, 1)
    assert run_job("--mode", "extract", "--model", "External/job001/model.pupick") == 1
    assert capsys.readouterr().err == "External/job001/model.pupick: model file not found\n"
    assert [p.name for p in (tmp_path / JOB).glob("RELION_JOB_*")] == ["RELION_JOB_EXIT_FAILURE"]


def test_training_without_labels_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, 1)
    assert run_job("--diameter", "150", *QUICK) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Input coordinates" in err
