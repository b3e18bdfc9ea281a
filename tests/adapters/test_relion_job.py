"""RELION's job contract: exactly one exit marker on every path, one-line run.err, abort."""

from __future__ import annotations

from pathlib import Path

import pytest

from pupick_ext import AbortRequested, InputError
from relion_wrapper import cli, job, workflow

JOB = "External/job007/"


def markers(job_dir: Path) -> list[str]:
    return sorted(p.name for p in job_dir.glob("RELION_JOB_*"))


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_success_marker(project: Path) -> None:
    jd = job.JobDirectory(JOB)
    assert job.run_job(jd, lambda: None) == job.RC_SUCCESS
    assert markers(project / JOB) == ["RELION_JOB_EXIT_SUCCESS"]


def test_stale_markers_are_replaced(project: Path) -> None:
    jd = job.JobDirectory(JOB)
    jd.path.mkdir(parents=True)
    for name in job.EXIT_MARKERS:
        (jd.path / name).touch()

    def fail() -> None:
        raise InputError("broken", "x.star")

    assert job.run_job(jd, fail) == job.RC_FAILURE
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]


def test_pupick_error_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fail() -> None:
        raise InputError("file not found", "CtfFind/job003/micrographs_ctf.star")

    assert job.run_job(job.JobDirectory(JOB), fail) == job.RC_FAILURE
    err = capsys.readouterr().err
    assert err == "CtfFind/job003/micrographs_ctf.star: file not found\n"
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]


def test_crash_is_one_line_plus_traceback_in_log(
    project: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    def crash() -> None:
        {}["missing"]  # noqa: B018 - a bug

    assert job.run_job(job.JobDirectory(JOB), crash) == job.RC_FAILURE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected KeyError" in err and "Traceback" not in err
    assert "Traceback" in caplog.text
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]


def test_crash_with_debug_shows_traceback(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def crash() -> None:
        raise RuntimeError("boom\nsecond line")

    job.run_job(job.JobDirectory(JOB), crash, debug=True)
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "pupick-relion: unexpected RuntimeError: boom" and "Traceback" in err


def test_system_exit_still_leaves_a_marker(project: Path) -> None:
    def leave() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        job.run_job(job.JobDirectory(JOB), leave)
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]


def test_abort(project: Path) -> None:
    jd = job.JobDirectory(JOB)

    def body() -> None:
        (jd.path / job.ABORT_NOW).touch()  # the GUI's "Abort" button
        jd.check_abort()

    assert job.run_job(jd, body) == job.RC_ABORTED
    assert markers(project / JOB) == ["RELION_JOB_EXIT_ABORTED"]  # and RELION_JOB_ABORT_NOW removed


def test_abort_while_failing_counts_as_abort(project: Path) -> None:
    jd = job.JobDirectory(JOB)

    def body() -> None:
        (jd.path / job.ABORT_NOW).touch()
        raise RuntimeError("interrupted half-way")

    assert job.run_job(jd, body) == job.RC_ABORTED
    assert markers(project / JOB) == ["RELION_JOB_EXIT_ABORTED"]


def test_engine_abort_exception(project: Path) -> None:
    def body() -> None:
        raise AbortRequested("stopped between micrographs")

    assert job.run_job(job.JobDirectory(JOB), body) == job.RC_ABORTED
    assert markers(project / JOB) == ["RELION_JOB_EXIT_ABORTED"]


def test_sigterm_leaves_failure_marker(project: Path) -> None:
    import os
    import signal

    def body() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    assert job.run_job(job.JobDirectory(JOB), body) == job.RC_FAILURE
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]


# ------------------------------------------------------------------ through main()
def test_main_bad_input_is_failure_with_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        [
            "--o",
            JOB,
            "--in_mics",
            "CtfFind/job003/micrographs_ctf.star",
            "--diameter",
            "150",
            "--in_coords",
            "ManualPick/job002/coords_suffix_manualpick.star",
            "--j",
            "1",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 1
    assert err == "CtfFind/job003/micrographs_ctf.star: file not found\n"
    assert "ERROR: CtfFind/job003/micrographs_ctf.star: file not found" in out
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]


def test_main_bad_parameter(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--o", JOB, "--in_mics", "m.star", "--diameter", "big"]) == 1
    assert capsys.readouterr().err == "parameter 'diameter': 'big' is not a number\n"
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]


def test_main_no_micrographs(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--o", JOB, "--diameter", "150", "--relion_version", "3.1"]) == 1
    assert "Input micrographs" in capsys.readouterr().err
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]


def test_main_crash(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(workflow, "run", crash)
    assert cli.main(["--o", JOB, "--in_mics", "m.star", "--diameter", "150"]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "ZeroDivisionError" in err
    assert "Traceback" in out and "Traceback" not in err
    assert markers(project / JOB) == ["RELION_JOB_EXIT_FAILURE"]

    assert cli.main(["--o", JOB, "--in_mics", "m.star", "--diameter", "150", "--debug", "Yes"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_main_logs_ignored_arguments(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflow, "run", lambda *a, **k: None)
    assert (
        cli.main(["--o", JOB, "--in_mics", "m.star", "--diameter", "150", "--in_3dref", "r.mrc", "--j", "2"])
        == 0
    )
    out, err = capsys.readouterr()
    assert "Ignoring arguments pupick-relion does not use: --in_3dref r.mrc" in out and err == ""
    assert markers(project / JOB) == ["RELION_JOB_EXIT_SUCCESS"]


def test_main_restores_logging(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    monkeypatch.setattr(workflow, "run", lambda *a, **k: None)
    before = list(logging.getLogger().handlers)
    cli.main(["--o", JOB, "--in_mics", "m.star", "--diameter", "150"])
    assert logging.getLogger().handlers == before
