"""Credentials, login and lookups through the real cryosparc-tools client against the fake."""

from __future__ import annotations

import os
import socket

import pytest
from cryosparc_fake.harness import EMAIL, PASSWORD, Live

from cryosparc_wrapper import Credentials, CryosparcError, PickOptions, connect, load_credentials, run_live
from cryosparc_wrapper.cli import main

ENV = {
    "CRYOSPARC_BASE_URL": "http://cs.example.org:39000",
    "CRYOSPARC_EMAIL": EMAIL,
    "CRYOSPARC_PASSWORD": PASSWORD,
}


def test_credentials_from_environment_and_repr_hides_password() -> None:
    creds = load_credentials(environ=ENV)
    assert creds.base_url == "http://cs.example.org:39000" and creds.email == EMAIL
    assert creds.password == PASSWORD
    assert PASSWORD not in repr(creds)
    host = load_credentials(environ={"CRYOSPARC_MASTER_HOSTNAME": "master", "CRYOSPARC_BASE_PORT": "61000"})
    assert host.url == "http://master:61000"
    assert Credentials(base_url="https://u:pw@cs.example.org/").url == "https://cs.example.org"


@pytest.mark.parametrize(
    "suffix, text",
    [
        (
            ".toml",
            '[cryosparc]\nbase_url = "http://file.example.org:39000"\nemail = "bo@example.org"\n'
            f'password = "{PASSWORD}"\n',
        ),
        (
            ".ini",
            "[cryosparc]\nbase_url = http://file.example.org:39000\nemail = bo@example.org\n"
            f"password = {PASSWORD}\n",
        ),
    ],
)
def test_config_file_wins_over_environment(tmp_path, suffix: str, text: str) -> None:
    path = tmp_path / f"cs{suffix}"
    path.write_text(text)
    os.chmod(path, 0o600)
    creds = load_credentials(path, environ={**ENV, "CRYOSPARC_BASE_PORT": "1"})
    assert (creds.base_url, creds.email, creds.password) == (
        "http://file.example.org:39000",
        "bo@example.org",
        PASSWORD,
    )
    assert creds.base_port is None


def test_config_problems_are_one_line(tmp_path) -> None:
    with pytest.raises(CryosparcError, match="no cryoSPARC address"):
        load_credentials(environ={})
    bad = tmp_path / "bad.ini"
    bad.write_text("[other]\nx = 1\n")
    with pytest.raises(CryosparcError, match=r"bad.ini: has no \[cryosparc\] section"):
        load_credentials(bad, environ={})
    unknown = tmp_path / "u.toml"
    unknown.write_text('[cryosparc]\nbase_url = "http://x"\nlicense = "abc"\n')
    with pytest.raises(CryosparcError, match="unknown keys license"):
        load_credentials(unknown, environ={})
    with pytest.raises(CryosparcError, match="config file not found"):
        load_credentials(tmp_path / "missing.toml", environ={})


def test_login_through_the_real_client(live: Live) -> None:
    cs = connect(live.credentials())
    assert cs.find_project("P1").uid == "P1"
    assert {"login", "users.me", "config.get_version"} <= set(live.state.calls)


def test_bad_password_is_one_clear_line_without_secrets(live: Live) -> None:
    with pytest.raises(CryosparcError) as info:
        connect(live.credentials(password="wrong-" + PASSWORD))
    message = str(info.value)
    assert message.startswith(f"cryoSPARC at {live.url} rejected the email/password")
    assert "\n" not in message and PASSWORD not in message and EMAIL not in message


def test_unreachable_instance_is_one_line() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        CryosparcError, match=f"cannot connect to cryoSPARC at http://127.0.0.1:{port}: cannot reach"
    ):
        connect(Credentials(base_url=f"http://127.0.0.1:{port}", email=EMAIL, password=PASSWORD))


@pytest.mark.parametrize(
    "project, workspace, exposures, particles, message",
    [
        ("P9", "W1", "J2", "J3", "project P9 not found (HTTP 404: Project P9 not found)"),
        ("P1", "W7", "J2", "J3", "workspace P1-W7 not found"),
        ("P1", "W1", "J99", "J3", "job P1-J99 not found (HTTP 404: Job P1-J99 not found)"),
        (
            "P1",
            "W1",
            "J2:exposures_accepted",
            "J3",
            "job P1-J2 has no output 'exposures_accepted' (its outputs: exposures)",
        ),
        ("P1", "W1", "J2", "J3:particles_selected", "job P1-J3 has no output 'particles_selected'"),
    ],
)
def test_unknown_project_workspace_job_or_output(
    live: Live, project, workspace, exposures, particles, message
) -> None:
    options = PickOptions(diameter=150, epochs=1, steps_per_epoch=1)
    with pytest.raises(CryosparcError) as info:
        run_live(project, workspace, exposures, particles, options, credentials=live.credentials())
    assert message in str(info.value)
    assert live.state.external_jobs() == []  # nothing was created


def test_cli_bad_credentials_exit_1_one_line(live: Live, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CRYOSPARC_BASE_URL", live.url)
    monkeypatch.setenv("CRYOSPARC_EMAIL", EMAIL)
    monkeypatch.setenv("CRYOSPARC_PASSWORD", "not-the-password")
    code = main(
        [
            "live",
            "--project",
            "P1",
            "--workspace",
            "W1",
            "--exposures",
            "J2",
            "--particles",
            "J3",
            "--diameter",
            "150",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        f"pupick-cryosparc: error: cryoSPARC at {live.url} rejected the email/password "
        "(HTTP 401: Incorrect email or password)"
    ]
    assert "not-the-password" not in err and "Traceback" not in err
    assert live.state.external_jobs() == []


def test_cli_unknown_job_exit_1_one_line(live: Live, tmp_path, capsys) -> None:
    config = tmp_path / "cs.toml"
    config.write_text(f'[cryosparc]\nbase_url = "{live.url}"\nemail = "{EMAIL}"\npassword = "{PASSWORD}"\n')
    config.chmod(0o600)
    code = main(
        [
            "live",
            "--config",
            str(config),
            "--project",
            "P1",
            "--workspace",
            "W1",
            "--exposures",
            "J42",
            "--mode",
            "extract",
            "--model",
            str(tmp_path / "m.pupick"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "pupick-cryosparc: error: job P1-J42 not found (HTTP 404: Job P1-J42 not found)"
    )
    assert PASSWORD not in err and "Traceback" not in err


def test_cli_settings_errors_before_contacting_anyone(capsys) -> None:
    code = main(["live", "--project", "P1", "--workspace", "W1", "--exposures", "J2", "--particles", "J3"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "pupick-cryosparc: error: training needs the particle diameter: give --diameter (Angstrom)"
    )


def test_cli_debug_shows_the_traceback(capsys) -> None:
    code = main(
        [
            "--debug",
            "offline",
            "--project-dir",
            "/nonexistent",
            "--exposures",
            "x.cs",
            "--out",
            "o",
            "--diameter",
            "150",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err
    assert (
        err.strip().splitlines()[-1] == "pupick-cryosparc: error: /nonexistent: project directory not found"
    )
