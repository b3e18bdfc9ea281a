"""Live mode end to end: the real cryosparc-tools client against the loopback fake CryoSPARC.

The fake records what the workflow did; these tests check the External job the way a user
would find it: inputs connected, output ``particles`` with the fields of cryoSPARC's pickers
(decoded from the bytes that arrived), status completed or failed with the message, and an
event log with progress lines and pictures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cryosparc.dataset import Dataset
from cryosparc_fake.harness import EMAIL, FAST, PASSWORD, PICKER_DESCR, Live

from cryosparc_wrapper import PickOptions, run_live
from cryosparc_wrapper.cli import main
from pupick_ext import ExtractSettings, InputError, MicrographEntry, extract_iter


def engine_picks(model_path, scene, threshold: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What the engine itself picks with the same model on the same files (RELION convention)."""
    entries = [MicrographEntry(scene.paths[n], name=n, pixel_size=scene.pixel_size) for n in scene.names]
    return {
        entry.name: (picks.x, picks.y)
        for entry, picks in extract_iter(model_path, entries, ExtractSettings(threshold=threshold))
    }


def assert_same_pixels(
    saved: Dataset, scene, expected: dict[str, tuple[np.ndarray, np.ndarray]], flip_y: bool = False
) -> None:
    """Saved fractions times the micrograph shape give the engine's pixel coordinates."""
    name_of = {uid: scene.names[i] for i, uid in enumerate(scene.exposures["uid"].tolist())}
    mic = np.array([name_of[u] for u in saved["location/micrograph_uid"].tolist()])
    for name, (x, y) in expected.items():
        rows = mic == name
        ny, nx = scene.shapes[name]
        assert saved["location/micrograph_shape"][rows].tolist() == [[ny, nx]] * int(rows.sum())
        got_x = saved["location/center_x_frac"][rows].astype(np.float64) * nx
        y_frac = saved["location/center_y_frac"][rows].astype(np.float64)
        got_y = (1 - y_frac) * ny if flip_y else y_frac * ny
        order, got = np.lexsort((y, x)), np.lexsort((got_y, got_x))
        np.testing.assert_allclose(got_x[got], x[order], atol=1e-3)
        np.testing.assert_allclose(got_y[got], y[order], atol=1e-3)


def test_train_and_extract_end_to_end(live: Live, tmp_path) -> None:
    options = PickOptions(diameter=live.scene.diameter, **FAST)
    result = run_live(
        "P1",
        "W1",
        "J2",
        "J3",
        options,
        credentials=live.credentials(),
        title="pupick test",
        workdir=tmp_path / "work",
    )
    job = live.state.jobs[("P1", result.job_uid)]

    # the job a user finds in W1
    assert job.model.title == "pupick test" and job.model.spec.type == "snowflake"
    assert job.status == "completed" and job.status_history == ["running", "completed"]
    assert job.failed_error is None
    inputs = job.model.spec.inputs.root
    assert [(c.job_uid, c.output) for c in inputs["micrographs"].connections] == [("J2", "exposures")]
    assert [(c.job_uid, c.output) for c in inputs["labelled_particles"].connections] == [("J3", "particles")]
    output = job.model.spec.outputs.root["particles"]
    assert output.type == "particle" and [s.name for s in output.slots] == ["location", "pick_stats"]

    # the saved dataset, decoded from the bytes the client streamed
    saved = job.saved_dataset("particles")
    assert saved.descr() == PICKER_DESCR
    assert len(saved) == result.n_particles > 0 and output.num_items == len(saved)
    assert set(saved["location/micrograph_uid"].tolist()) <= set(live.scene.exposures["uid"].tolist())
    assert set(saved["location/exp_group_id"].tolist()) == {1}
    assert set(saved["location/micrograph_path"]) <= set(live.scene.exposures["micrograph_blob/path"])
    assert ((saved["location/center_x_frac"] >= 0) & (saved["location/center_x_frac"] < 1)).all()
    np.testing.assert_allclose(saved["location/min_dist_A"], live.scene.diameter / 2)
    assert_same_pixels(saved, live.scene, engine_picks(result.model_path, live.scene, FAST["threshold"]))

    # the event log: progress lines, the threshold table, pictures, the output thumbnail
    texts = job.event_texts("text")
    assert any(t.startswith("training on ") for t in texts)
    assert any("epoch" in t for t in texts), texts
    assert any(t.startswith("[") and "picks" in t for t in texts), texts
    assert any(f"saved {len(saved)} particles to output 'particles'" in t for t in texts)
    assert len(job.event_texts("image")) >= 3 and not job.event_texts("error")
    assert "particles" in job.output_images and job.tile_image
    assert live.state.calls.count("jobs.save_output") == 1

    # settings beside the outputs, without credentials
    settings = (tmp_path / "work" / "pupick_cryosparc.json").read_text()
    assert json.loads(settings)["options"]["diameter"] == live.scene.diameter
    assert PASSWORD not in settings and EMAIL not in settings
    assert result.model_path is not None and result.model_path.is_file()


def test_extract_with_flip_y_and_downloaded_micrographs(live: Live, trained_model, tmp_path) -> None:
    """The project directory is not mounted here: micrographs come through projects.download_file."""
    live.state.reported_dirs["P1"] = "/nonexistent/cryosparc/P1"
    options = PickOptions(mode="extract", model=trained_model, threshold=-20.0, flip_y=True)
    result = run_live(
        "P1", "W1", "J2:exposures", None, options, credentials=live.credentials(), workdir=tmp_path / "work"
    )
    job = live.state.jobs[("P1", result.job_uid)]
    assert job.status == "completed"
    assert live.state.calls.count("projects.download_file") == len(live.scene.names)
    assert "labelled_particles" not in job.model.spec.inputs.root
    for name in live.scene.names:
        assert (tmp_path / "work" / "micrographs" / "J2" / "motioncorrected" / f"{name}.mrc").is_file()
    saved = job.saved_dataset("particles")
    assert len(saved) > 0
    assert_same_pixels(saved, live.scene, engine_picks(trained_model, live.scene, -20.0), flip_y=True)


def assert_failed_cleanly(live: Live, message: str) -> None:
    [job] = live.state.external_jobs()
    assert job.status == "failed" and job.status_history[-1] == "failed"
    assert "jobs.mark_failed" in live.state.calls
    assert message in job.failed_error
    assert any(message in t for t in job.event_texts("error"))
    assert not job.saved and "jobs.save_output" not in live.state.calls


def test_exposures_without_micrograph_paths_fail_the_job(live: Live, trained_model) -> None:
    movies = Dataset.allocate(2, [("movie_blob/path", "O"), ("micrograph_blob/shape", "<u4", (2,))])
    live.state.add_completed_job(
        "P1", "W1", "J4", "import_movies", "Import Movies", {"imported_movies": ("exposure", movies)}
    )
    options = PickOptions(mode="extract", model=trained_model)
    with pytest.raises(InputError) as info:
        run_live("P1", "W1", "J4:imported_movies", None, options, credentials=live.credentials())
    assert str(info.value).startswith("J4.imported_movies: exposures carry no micrograph_blob/path")
    assert_failed_cleanly(live, "exposures carry no micrograph_blob/path")


def test_unreadable_micrograph_fails_the_job(live: Live, trained_model) -> None:
    broken = live.scene.paths[live.scene.names[1]]
    broken.write_bytes(b"this is not an MRC file" * 100)
    options = PickOptions(mode="extract", model=trained_model)
    with pytest.raises(InputError) as info:
        run_live("P1", "W1", "J2", None, options, credentials=live.credentials())
    assert str(broken) in str(info.value)
    assert_failed_cleanly(live, str(broken))


def test_cli_live_end_to_end_in_process(live: Live, trained_model, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CRYOSPARC_BASE_URL", live.url)
    monkeypatch.setenv("CRYOSPARC_EMAIL", EMAIL)
    monkeypatch.setenv("CRYOSPARC_PASSWORD", PASSWORD)
    code = main(
        [
            "live",
            "--project",
            "P1",
            "--workspace",
            "W1",
            "--exposures",
            "J2",
            "--mode",
            "extract",
            "--model",
            str(trained_model),
            "--threshold",
            "-20",
            "--workdir",
            str(tmp_path / "w"),
        ]
    )
    out, err = capsys.readouterr()
    [job] = live.state.external_jobs()
    assert code == 0, err
    assert (
        out.strip()
        == f"P1-{job.model.uid}: {len(job.saved_dataset('particles'))} particles in output 'particles'"
    )
    assert PASSWORD not in out + err and EMAIL not in out + err


def test_console_script_failure_is_one_line(live: Live, trained_model, tmp_path) -> None:
    """The installed command, in a subprocess: a failed job, one line on stderr, exit 1."""
    broken = live.scene.paths[live.scene.names[0]]
    broken.write_bytes(b"\0" * 10)
    env = {
        "PATH": "/usr/bin:/bin",
        "CRYOSPARC_BASE_URL": live.url,
        "CRYOSPARC_EMAIL": EMAIL,
        "CRYOSPARC_PASSWORD": PASSWORD,
        "HOME": str(tmp_path),
    }
    script = Path(sys.executable).with_name("pupick-cryosparc")
    command = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "import sys; from cryosparc_wrapper.cli import main; sys.exit(main())"]
    )
    proc = subprocess.run(
        [
            *command,
            "-q",
            "live",
            "--project",
            "P1",
            "--workspace",
            "W1",
            "--exposures",
            "J2",
            "--mode",
            "extract",
            "--model",
            str(trained_model),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"pupick-cryosparc: error: {broken}: " + proc.stderr.split(f"{broken}: ", 1)[1].strip()
    ]
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
    assert_failed_cleanly(live, str(broken))


def test_train_only_completes_without_an_output(live: Live, tmp_path) -> None:
    options = PickOptions(
        mode="train", diameter=live.scene.diameter, epochs=1, steps_per_epoch=1, num_threads=2
    )
    result = run_live(
        "P1", "W1", "J2", "J3:particles", options, credentials=live.credentials(), workdir=tmp_path / "w"
    )
    job = live.state.jobs[("P1", result.job_uid)]
    assert job.status == "completed" and not job.model.spec.outputs.root and not job.saved
    assert result.n_particles == 0 and result.model_path == tmp_path / "w" / "training" / "model.pupick"
    assert any("use the model with --mode extract --model" in t for t in job.event_texts("text"))


def test_stop_pressed_in_cryosparc_ends_the_run(live: Live, trained_model, monkeypatch) -> None:
    """The UI's Stop kills the External job; the run notices through job.refresh() and saves nothing."""
    import cryosparc_wrapper.live as live_mode
    from cryosparc_wrapper import CryosparcError

    monkeypatch.setattr(live_mode, "STOP_POLL_SECONDS", 0.0)
    live.state.kill_running_on_read = 1  # the first status read after the start sees "killed"
    options = PickOptions(mode="extract", model=trained_model, threshold=-20.0)
    with pytest.raises(CryosparcError, match="was killed in cryoSPARC; nothing was saved"):
        run_live("P1", "W1", "J2", None, options, credentials=live.credentials())
    [job] = live.state.external_jobs()
    assert job.status == "killed" and job.status_history == ["running", "killed"]
    assert not job.saved and "jobs.save_output" not in live.state.calls
    assert "jobs.mark_failed" not in live.state.calls and "jobs.mark_completed" not in live.state.calls


def test_stop_is_polled_at_a_bounded_rate(live: Live, trained_model, monkeypatch) -> None:
    """With the default interval a short run reads the job's status at most once or twice."""
    live.state.kill_running_on_read = 10**6  # counts reads, never kills
    options = PickOptions(mode="extract", model=trained_model, threshold=-20.0)
    run_live("P1", "W1", "J2", None, options, credentials=live.credentials())
    [job] = live.state.external_jobs()
    assert job.status == "completed"
    reads = 10**6 - live.state.kill_running_on_read  # status reads while the job was running
    assert 0 <= reads <= 2  # STOP_POLL_SECONDS apart, not one per micrograph


def test_job_failure_message_is_one_line(live: Live, tmp_path) -> None:
    """What cryoSPARC shows as the job's error is pupick's one line, not a Python traceback."""
    from pupick_ext import ModelError

    not_a_model = tmp_path / "notes.pupick"
    not_a_model.write_text("this is not a model\n")
    options = PickOptions(mode="extract", model=not_a_model)
    with pytest.raises(ModelError):
        run_live("P1", "W1", "J2", None, options, credentials=live.credentials())
    [job] = live.state.external_jobs()
    assert job.status == "failed"
    assert job.failed_error is not None and "\n" not in job.failed_error.strip()
    assert "Traceback" not in job.failed_error and 'File "' not in job.failed_error
    assert "not a torch archive" in job.failed_error and "notes.pupick" in job.failed_error
    assert any(t.startswith("pupick failed: ") and "notes.pupick" in t for t in job.event_texts("error"))
