"""Nothing pupick reads runs code, and cryoSPARC credentials never leave the process.

A planted pickle (an object whose ``__reduce__`` would create a marker file) as a model file, a
training checkpoint, a preprocessing cache entry and a cryoSPARC ``.cs`` file: every reader refuses
or ignores it, and the marker never appears. The password (and the email) never appear in any
output of a live run against the fake cryoSPARC: stdout, stderr, logs, the work directory, the
job's event log and error, the settings saved; with good and bad credentials, with ``--debug``.
"""

from __future__ import annotations

import builtins
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cryosparc_fake.harness import EMAIL, PASSWORD
from reliability_helpers import exposures_dataset, files_under, run_cryosparc, run_pupick, run_relion

from pupick_ext import ModelError, load_model


class Planted:
    """Unpickling this runs ``exec``, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def plant_model(path: Path, marker: Path) -> Path:
    """A torch archive that looks like a pupick model but carries the planted object."""
    torch.save(
        {
            "format": "pupick-model",
            "format_version": 1,
            "info": "{}",
            "state_dict": {},
            "payload": Planted(marker),
        },
        path,
    )
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "CODE_RAN"


def test_the_plant_would_run_code(tmp_path: Path, marker: Path) -> None:
    """Sanity check: loading the planted file with plain pickle does create the marker."""
    path = plant_model(tmp_path / "evil.pupick", marker)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"exec" in data
    pickle.loads(pickle.dumps(Planted(marker)))
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("kind", ["torch_archive", "legacy_pickle"])
def test_load_model_refuses_planted_pickle(tmp_path: Path, marker: Path, kind: str) -> None:
    path = tmp_path / "model.pupick"
    if kind == "torch_archive":
        plant_model(path, marker)
    else:
        path.write_bytes(pickle.dumps({"format": "pupick-model", "payload": Planted(marker)}))
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert "refused" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


def test_entry_points_refuse_planted_model(corpus, tmp_path: Path, marker: Path) -> None:
    evil = plant_model(tmp_path / "evil model.pupick", marker)
    star = "lists/model_corrupt.star"  # one good micrograph
    run = run_pupick(
        ["extract", "-m", star, "--model", evil, "-o", f"{tmp_path}/picks/", "--device", "cpu"],
        corpus.project,
        tmp_path / "picks",
    )
    assert run.rc == 1 and run.err_lines[-1].startswith(f"pupick: error: {evil}: refused"), run.err
    assert not marker.exists() and not files_under(tmp_path / "picks")

    job = "External/job900/"
    run = run_relion(
        ["--in_mics", star, "--mode", "extract", "--model", evil, "--device", "cpu"], corpus.project, job
    )
    assert run.rc == 1 and run.err_lines == [run.err_lines[0]] and "refused" in run.err_lines[0], run.err
    assert (corpus.project / job / "RELION_JOB_EXIT_FAILURE").exists()
    assert not marker.exists()

    exposures = exposures_dataset(corpus.project, [f"Micrographs/{corpus.good[0]}.mrc"], [1.5])
    exposures.save(tmp_path / "exposures.cs")
    run = run_cryosparc(
        [
            "-q",
            "offline",
            "--project-dir",
            corpus.project,
            "--exposures",
            tmp_path / "exposures.cs",
            "--out",
            tmp_path / "cs_out",
            "--mode",
            "extract",
            "--model",
            evil,
            "--device",
            "cpu",
        ],
        corpus.project,
        tmp_path / "cs_out",
    )
    assert run.rc == 1 and "refused" in run.err_lines[-1], run.err
    assert not marker.exists() and not (tmp_path / "cs_out" / "particles.cs").exists()


def test_planted_checkpoint_cache_and_cs_files_are_never_unpickled(
    corpus, tmp_path: Path, marker: Path
) -> None:
    """A checkpoint and cache entries in the output directory, and a .cs file, carrying the plant."""
    out = tmp_path / "model"
    out.mkdir()
    plant_model(out / "checkpoint.pt", marker)
    args = [
        "train",
        "-m",
        "lists/labels_partly_unusable.star",
        "-l",
        "labels/labels_partly_unusable.txt",
        "-d",
        "150",
        "-o",
        out,
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    first = run_pupick(args, corpus.project, out)
    assert first.rc == 0, first.text
    assert "ignoring unreadable checkpoint" in first.err
    cache = sorted((out / "cache").glob("*.npz"))
    assert cache
    for path in cache:  # replace every cache entry with an object array holding the plant
        with open(path, "wb") as handle:
            np.savez(
                handle, image=np.array([Planted(marker)], dtype=object), scale=np.ones(2), shape=np.ones(2)
            )
    (out / "model.pupick").unlink()
    plant_model(out / "checkpoint.pt", marker)
    second = run_pupick(args, corpus.project, out)
    assert second.rc == 0, second.text
    assert "ignoring unreadable cache file" in second.err
    assert not marker.exists()

    evil_cs = tmp_path / "evil.cs"
    with open(evil_cs, "wb") as handle:
        np.save(handle, np.array([Planted(marker)], dtype=object), allow_pickle=True)
    run = run_cryosparc(
        [
            "-q",
            "offline",
            "--project-dir",
            corpus.project,
            "--exposures",
            evil_cs,
            "--out",
            tmp_path / "cs_out",
            "--mode",
            "extract",
            "--model",
            out / "model.pupick",
        ],
        corpus.project,
        tmp_path / "cs_out",
    )
    assert run.rc == 1 and "not a cryoSPARC .cs dataset" in run.err_lines[-1], run.err
    assert not marker.exists()


# ------------------------------------------------------------------ credentials
SECRETS = {"password": PASSWORD, "password sha256": hashlib.sha256(PASSWORD.encode()).hexdigest()}


def _leaks(texts: dict[str, bytes | str], with_email: bool = True) -> list[str]:
    secrets = dict(SECRETS, **({"email": EMAIL} if with_email else {}))
    found = []
    for where, text in texts.items():
        raw = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
        for what, secret in secrets.items():
            if secret.encode() in raw:
                found.append(f"{what} in {where}")
    return found


def _everything(run, site, workdir: Path, project: Path, before: set) -> dict[str, bytes | str]:
    texts: dict[str, bytes | str] = {"stdout": run.out, "stderr": run.err}
    for path in files_under(workdir):
        texts[str(path)] = path.read_bytes()
    for path in files_under(project):  # files written into the project (job directories, imports)
        if path not in before:
            texts[str(path)] = path.read_bytes()
    for (_, uid), job in site.state.jobs.items():
        texts[f"job {uid} events"] = repr(job.events)
        texts[f"job {uid} error/title/desc"] = repr(
            (job.failed_error, job.model.title, job.model.description)
        )
        texts[f"job {uid} saved outputs"] = b"".join(b for blobs in job.saved.values() for b in blobs)
    texts["uploaded assets"] = b"".join(body for _, body in site.state.assets.values())
    return texts


@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "debug"])
def test_credentials_never_appear_in_outputs(
    corpus, good_model: Path, fake_site, tmp_path: Path, debug: bool
) -> None:
    project = corpus.project
    exposures = exposures_dataset(project, [f"Micrographs/{n}.mrc" for n in corpus.good], [1.5] * 3)
    job = fake_site.add_job("exposures", "exposure", exposures)
    before = set(files_under(project))
    flags = ["--debug"] if debug else []
    base = [
        *flags,
        "live",
        "--project",
        "P1",
        "--workspace",
        "W1",
        "--exposures",
        job,
        "--mode",
        "extract",
        "--model",
        good_model,
        "--threshold",
        "-8",
        "--device",
        "cpu",
    ]

    good = run_cryosparc(
        [*base, "--workdir", tmp_path / "w_good"], tmp_path, tmp_path / "w_good", env=fake_site.env
    )
    assert good.rc == 0, good.text
    assert _leaks(_everything(good, fake_site, tmp_path, project, before)) == []

    bad_password = dict(fake_site.env, CRYOSPARC_PASSWORD="wrong-" + PASSWORD[::-1])
    run = run_cryosparc(
        [*base, "--workdir", tmp_path / "w_bad"], tmp_path, tmp_path / "w_bad", env=bad_password
    )
    assert run.rc == 1 and "rejected the email/password" in run.err, run.text
    texts = _everything(run, fake_site, tmp_path, project, before)
    assert _leaks(texts) == [] and bad_password["CRYOSPARC_PASSWORD"] not in run.text
    if not debug:
        assert run.err_lines == [run.err_lines[-1]]

    wrong_email = dict(fake_site.env, CRYOSPARC_EMAIL="nobody@example.org")
    run = run_cryosparc(
        [*base, "--workdir", tmp_path / "w_email"], tmp_path, tmp_path / "w_email", env=wrong_email
    )
    assert run.rc == 1, run.text
    assert _leaks({"stdout": run.out, "stderr": run.err}) == [] and "nobody@example.org" not in run.text

    config = tmp_path / "cryosparc.toml"
    config.write_text(
        f'[cryosparc]\nbase_url = "{fake_site.fake.base_url}"\nemail = "{EMAIL}"\npassword = "{PASSWORD}x"\n'
    )
    config.chmod(0o600)
    run = run_cryosparc(
        [*flags, "live", "--config", config, *base[len(flags) + 1 :], "--workdir", tmp_path / "w_cfg"],
        tmp_path,
        tmp_path / "w_cfg",
        env={},
    )
    assert run.rc == 1 and "rejected" in run.err, run.text
    assert _leaks({"stdout": run.out, "stderr": run.err}) == []


def test_malformed_config_file_does_not_echo_the_password(tmp_path: Path) -> None:
    """A config file the parser cannot read: the message names the file, never its lines."""
    for name, text in (
        ("c.ini", f"[cryosparc]\npassword {PASSWORD}\nemail = {EMAIL}\n= broken\n"),
        ("c.toml", f'[cryosparc]\npassword = "{PASSWORD}\nemail = "{EMAIL}"\n'),
    ):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        run = run_cryosparc(
            [
                "live",
                "--config",
                path,
                "--project",
                "P1",
                "--workspace",
                "W1",
                "--exposures",
                "J2",
                "--mode",
                "extract",
                "--model",
                "m.pupick",
            ],
            tmp_path,
            tmp_path,
            env={},
        )
        assert run.rc == 1 and name in run.err, run.text
        assert _leaks({"stdout": run.out, "stderr": run.err}) == [], run.text
