"""Training survives SIGTERM and SIGINT, and the same inputs, settings and seed give the same picks.

``pupick train`` runs as the installed command (a subprocess); as soon as its first checkpoint
exists (epoch 1 of 3 done) it gets SIGTERM (a queue system's kill) or SIGINT (Ctrl-C). It must stop
at the next step with exit status 1 and one error line, keeping the checkpoint and writing no model.
The same command run again resumes from the checkpoint and ends with 3 epochs; its model must equal,
tensor for tensor, the model of an uninterrupted run with the same seed (CPU training is
deterministic for a seed), and so must its picks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import python_env, run_pupick, snapshot

from pupick_ext import generate_demo_data

EPOCHS = 3
TRAIN = f"--epochs {EPOCHS} --steps-per-epoch 24 --width 8 -d 150 --seed 5 --threads 1 --device cpu".split()
TRAIN += ["--holdout", "0.25"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    generate_demo_data(root, n_micrographs=4, preset="easy", seed=3, shape=(256, 256))
    return root


def _train_args(out: str) -> list[str]:
    return ["-q", "train", "-m", "micrographs_ctf.star", "-l", "truth.txt", "-o", out, *TRAIN]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["state_dict"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _pupick_command() -> list[str]:
    exe = Path(sys.executable).with_name("pupick")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "pupick_ext.cli"]


@pytest.fixture(scope="module")
def reference(project: Path) -> Path:
    """An uninterrupted training (in-process)."""
    run = run_pupick(_train_args("uninterrupted"), project, project / "uninterrupted")
    assert run.rc == 0, run.text
    history = json.loads((project / "uninterrupted" / "training_history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    return project / "uninterrupted" / "model.pupick"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_and_a_rerun_resumes_to_the_same_model(
    project: Path, reference: Path, signum: int
) -> None:
    name = signal.Signals(signum).name
    for attempt in range(3):  # a loaded machine may deliver the signal after training ended: try again
        out = f"interrupted_{name}_{attempt}"
        checkpoint = project / out / "checkpoint.pt"
        proc = subprocess.Popen(
            [*_pupick_command(), *_train_args(out)],
            cwd=project,
            env=python_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() - started < 120:
            time.sleep(0.005)
        assert proc.poll() is None, "training ended before its first checkpoint:\n" + proc.communicate()[1]
        os.kill(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=120)
        if not (proc.returncode == 0 and (project / out / "model.pupick").exists()):
            break
    else:
        pytest.fail(f"{name} arrived after training had finished in 3 attempts")

    # a clean stop: status 1, one error line saying what is kept, no traceback, no model
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("pupick: error:")]
    assert len(errors) == 1 and errors[0] == stderr.strip().splitlines()[-1], stderr
    assert "checkpoint" in errors[0] and "re-run resumes" in errors[0], errors[0]
    assert checkpoint.is_file() and not (project / out / "model.pupick").exists()
    stopped = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert 1 <= int(stopped["epoch"]) < EPOCHS

    # the same command again resumes and finishes with the same model as an uninterrupted run
    rerun = run_pupick(_train_args(out).copy(), project, project / out)
    assert rerun.rc == 0, rerun.text
    history = json.loads((project / out / "training_history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert _same_weights(project / out / "model.pupick", reference), (
        "resumed model differs from the uninterrupted one"
    )
    reference_info = json.loads(torch.load(reference, weights_only=True)["info"])
    info = json.loads(torch.load(project / out / "model.pupick", weights_only=True)["info"])
    assert info["recommended_threshold"] == reference_info["recommended_threshold"]
    assert info["threshold_table"] == reference_info["threshold_table"]


def test_same_seed_same_picks(project: Path, reference: Path) -> None:
    """train twice + extract twice with the same inputs, settings and seed: identical files (CPU)."""
    again = run_pupick(_train_args("again"), project, project / "again")
    assert again.rc == 0, again.text
    assert _same_weights(project / "again" / "model.pupick", reference)
    outputs = []
    for i, model in enumerate((reference, project / "again" / "model.pupick")):
        out = project / f"picks_{i}"
        run = run_pupick(
            [
                "-q",
                "extract",
                "-m",
                "micrographs_ctf.star",
                "--model",
                model,
                "-o",
                f"{out}/",
                "--threshold",
                "-6",
                "--device",
                "cpu",
            ],
            project,
            out,
        )
        assert run.rc == 0, run.text
        outputs.append(snapshot(out))
        one_file = project / f"picks_{i}.star"
        run = run_pupick(
            [
                "-q",
                "extract",
                "-m",
                "micrographs_ctf.star",
                "--model",
                model,
                "-o",
                one_file,
                "--threshold",
                "-6",
                "--device",
                "cpu",
            ],
            project,
            one_file,
        )
        assert run.rc == 0, run.text
    assert outputs[0] == outputs[1] and len(outputs[0]) == 4
    assert sum(len(b) for b in outputs[0].values()) > 4 * 200  # picks were made, not just headers
    assert (project / "picks_0.star").read_bytes() == (project / "picks_1.star").read_bytes()
