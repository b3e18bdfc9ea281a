"""Extraction on several processes writes what one process writes, byte for byte.

``torchrun --nproc_per_node 2`` (through ``python -m torch.distributed.run``, gloo on the
CPU) runs ``pupick extract``: each rank picks every second micrograph, rank 0 combines.
The same is checked without a process group (the srun / mpirun path: ranks from
``SLURM_PROCID`` or ``OMPI_COMM_WORLD_RANK``, coordination through files), and for the
RELION External job launched as two ranks. Micrographs are small and the network is a
narrow untrained one, so this stays a few seconds of CPU per run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from pupick_ext import PickerModel
from pupick_ext.network.models import build_model

pytestmark = pytest.mark.slow

N_MICROGRAPHS = 5
CLI = "import sys; from pupick_ext.cli import main; sys.exit(main())"


def _micrographs(directory: Path) -> list[Path]:
    rng = np.random.default_rng(7)
    paths, labels = [], ["image_name\tx_coord\ty_coord"]
    yy, xx = np.mgrid[0:160, 0:192]
    for i in range(N_MICROGRAPHS):
        image = rng.normal(10.0, 1.0, size=(160, 192))
        for _ in range(12):
            cy, cx = rng.uniform(10, 150), rng.uniform(10, 182)
            image -= 2.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
            labels.append(f"mic_{i:03d}\t{cx:.2f}\t{cy:.2f}")
        (directory.parent / "labels.txt").write_text("\n".join(labels) + "\n")
        path = directory / f"mic_{i:03d}.mrc"
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(image.astype(np.float32))
            mrc.voxel_size = 2.0
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    (root / "Micrographs").mkdir()
    _micrographs(root / "Micrographs")
    torch.manual_seed(3)
    net = build_model("conv31", width=8).eval()
    info = {"architecture": "conv31", "width": 8, "pixel_size": 2.0, "downsample": 1.0,
            "particle_diameter": 40.0, "normalization": "standard", "gmm": None,
            "recommended_threshold": -50.0, "receptive_field": 31}
    PickerModel(net, info).save(root / "model.pupick")
    return root


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_", "PUPICK_"))
           and k not in ("RANK", "WORLD_SIZE")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def _extract_args(root: Path, output: Path) -> list[str]:
    return ["extract", "-m", str(root / "Micrographs"), "--model", str(root / "model.pupick"),
            "-o", str(output), "--batch-size", "2"]


def _single(root: Path, output: Path, threads: int = 2) -> None:
    cmd = [sys.executable, "-c", CLI, *_extract_args(root, output), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr


def _torchrun(root: Path, output: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "--no-python", sys.executable, "-c", CLI, *_extract_args(root, output)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


def _ranks(root: Path, output: Path, rank_env: list[dict[str, str]],
           args: list[str] | None = None) -> list[int]:
    procs = [subprocess.Popen([sys.executable, "-c", CLI, *(args or _extract_args(root, output))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(**env))
             for env in rank_env]
    codes = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        codes.append(proc.returncode)
        assert proc.returncode == 0, out
    return codes


def _same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert len(files_a) == N_MICROGRAPHS
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.parametrize("output_name", ["picks.star", "picks.txt", "coords/"])
def test_torchrun_two_ranks_write_the_single_process_output(project: Path, tmp_path: Path,
                                                             output_name: str) -> None:
    single, multi = tmp_path / "single" / output_name, tmp_path / "torchrun" / output_name
    _single(project, single)
    done = _torchrun(project, multi)
    assert done.returncode == 0, done.stdout + done.stderr
    if output_name.endswith("/"):
        _same_tree(single, multi)
    else:
        assert multi.read_bytes() == single.read_bytes()
        assert len(multi.read_text().splitlines()) > N_MICROGRAPHS  # picks were made
    leftovers = [p.name for p in multi.parent.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_thread_count_does_not_change_a_byte(project: Path, tmp_path: Path) -> None:
    _single(project, tmp_path / "one.star", threads=1)
    _single(project, tmp_path / "two.star", threads=2)
    assert (tmp_path / "one.star").read_bytes() == (tmp_path / "two.star").read_bytes()


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_ranks_without_a_process_group_coordinate_through_files(project: Path, tmp_path: Path,
                                                                 launcher: str) -> None:
    single, multi = tmp_path / "single.star", tmp_path / "multi" / "picks.star"
    _single(project, single)
    if launcher == "srun":
        envs = [{"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_PROCID": str(r),
                 "SLURM_STEP_NUM_TASKS": "3", "SLURM_LOCALID": str(r)} for r in range(3)]
    else:
        envs = [{"OMPI_COMM_WORLD_RANK": str(r), "OMPI_COMM_WORLD_SIZE": "3", "PMIX_NAMESPACE": "ns-1"}
                for r in range(3)]
    _ranks(project, multi, envs)
    assert multi.read_bytes() == single.read_bytes()
    assert not (multi.parent / ".pupick_ranks").exists()


def test_a_failing_rank_fails_the_run_instead_of_hanging(project: Path, tmp_path: Path) -> None:
    bad = tmp_path / "mics"
    bad.mkdir()
    for p in sorted((project / "Micrographs").glob("*.mrc")):
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "mic_001.mrc").write_bytes(b"not an mrc file at all" * 100)  # rank 1's share
    args = ["extract", "-m", str(bad), "--model", str(project / "model.pupick"),
            "-o", str(tmp_path / "p.star")]
    envs = [{"PUPICK_RANK": str(r), "PUPICK_WORLD_SIZE": "2", "PUPICK_RUN_ID": "t1",
             "PUPICK_WAIT_TIMEOUT": "120"} for r in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(**env)) for env in envs]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert results[1][0] == 1 and "mic_001" in results[1][1]
    assert results[0][0] == 1 and "rank 1" in results[0][1] and "mic_001" in results[0][1]
    assert not (tmp_path / "p.star").exists()


def test_relion_job_as_two_ranks_matches_one_process(project: Path, tmp_path: Path) -> None:
    from pupick_ext import write_atomic

    runs = {}
    for label, envs in (("single", [{}]),
                        ("ranks", [{"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "1", "SLURM_PROCID": str(r),
                                    "SLURM_STEP_NUM_TASKS": "2"} for r in range(2)])):
        work = tmp_path / label
        (work / "Micrographs").mkdir(parents=True)
        lines = ["", "data_", "", "loop_", "_rlnMicrographName #1"]
        for p in sorted((project / "Micrographs").glob("*.mrc")):
            (work / "Micrographs" / p.name).write_bytes(p.read_bytes())
            lines.append(f"Micrographs/{p.name}")
        write_atomic(work / "micrographs.star", "\n".join(lines) + "\n")
        args = ["--o", "External/job005/", "--in_mics", "micrographs.star", "--mode", "extract", "--model",
                str(project / "model.pupick"), "--relion_version", "4", "--pictures", "0", "--j", "1"]
        procs = [subprocess.Popen([sys.executable, "-m", "relion_wrapper.cli", *args], cwd=work,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=_env(**env))
                 for env in envs]
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
        runs[label] = work / "External" / "job005"
    single, ranks = runs["single"], runs["ranks"]
    for name in ("autopick.star", "RELION_OUTPUT_NODES.star", "RELION_JOB_EXIT_SUCCESS"):
        assert (ranks / name).read_bytes() == (single / name).read_bytes(), name
    coords = sorted(p.relative_to(single) for p in (single / "Micrographs").glob("*.star"))
    assert len(coords) == N_MICROGRAPHS
    for rel in coords:
        assert (ranks / rel).read_bytes() == (single / rel).read_bytes()
    assert not (ranks / ".pupick_ranks").exists()
    assert sorted(p.name for p in ranks.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"]


def _train_args(root: Path, output: Path) -> list[str]:
    return ["train", "-m", str(root / "Micrographs"), "-l", str(root / "labels.txt"), "-d", "40",
            "--model", "conv31", "--width", "8", "--epochs", "2", "--steps-per-epoch", "3",
            "--device", "cpu", "-o", str(output)]


def test_torchrun_trains_one_model_with_ddp(project: Path, tmp_path: Path) -> None:
    from pupick_ext import load_model

    states = []
    for run in ("a", "b"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--no-python", sys.executable, "-c", CLI, *_train_args(project, tmp_path / run)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "rank 1/2" in done.stderr  # both ranks ran and said so
        assert "recommended threshold" in done.stdout and done.stdout.count("model:") == 1  # rank 0 reports
        model = load_model(tmp_path / run / "model.pupick")
        history = (tmp_path / run / "training_history.json").read_text()
        assert '"epoch": 2' in history
        states.append(model.net.state_dict())
    for key, value in states[0].items():  # gloo all-reduce in a fixed order: deterministic for a seed
        assert torch.equal(value, states[1][key]), key
