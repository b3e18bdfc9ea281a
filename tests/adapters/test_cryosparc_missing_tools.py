"""pupick-cryosparc in an installation without the ``cryosparc`` extra (``pip install pupick``).

cryosparc-tools (and the httpx it brings) is optional. Each check runs a fresh interpreter in
which ``cryosparc`` and ``httpx`` cannot be imported, as when they were never installed, and
calls the ``pupick-cryosparc`` console-script entry point the way the installed script does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cryosparc_wrapper.errors import missing_tools_message

ONE_LINE = "pupick-cryosparc: error: cryosparc-tools is not installed; pip install 'pupick[cryosparc]'"

_WITHOUT_EXTRA = textwrap.dedent(
    """
    import sys

    # a None entry makes "import cryosparc" (and "import cryosparc.dataset") raise
    # ModuleNotFoundError and importlib.util.find_spec return None, as for an absent package
    sys.modules["cryosparc"] = None
    sys.modules["httpx"] = None
    """
)

_RUN_SCRIPT = textwrap.dedent(
    """
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "pupick-cryosparc"]
    sys.argv = ["pupick-cryosparc", *sys.argv[1:]]
    sys.exit(script.load()())
    """
)


def _without_extra(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRA + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["offline", "--exposures", "J12_exposures.cs", "--particles", "J14_particles.cs",
         "--project-dir", ".", "--out", "picks", "--diameter", "150"],
        ["live", "--project", "P3", "--workspace", "W1", "--exposures", "J12", "--particles", "J14",
         "--diameter", "150"],
    ],
    ids=["offline", "live"],
)
def test_cli_without_cryosparc_tools_is_one_line(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "J12_exposures.cs").write_bytes(b"")
    (tmp_path / "J14_particles.cs").write_bytes(b"")
    result = _without_extra(_RUN_SCRIPT, *args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [ONE_LINE]
    assert result.stdout == ""
    assert not (tmp_path / "picks").exists()  # failed before any work


def test_help_works_without_cryosparc_tools(tmp_path: Path) -> None:
    for args in (["--help"], ["offline", "--help"], ["live", "--help"]):
        result = _without_extra(_RUN_SCRIPT, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Usage: pupick-cryosparc {' '.join(args[:-1])}".rstrip())
        assert result.stderr == ""
    result = _without_extra(_RUN_SCRIPT, "--version", cwd=tmp_path)
    assert result.returncode == 0 and "pupick-cryosparc" in result.stdout


def test_library_import_without_cryosparc_tools(tmp_path: Path) -> None:
    code = """
    import cryosparc_wrapper
    from cryosparc_wrapper import PickOptions, connect  # need nothing from cryosparc-tools to import

    assert PickOptions(diameter=150).diameter == 150
    assert callable(connect) and cryosparc_wrapper.connect is connect  # the function, not the module
    try:
        from cryosparc_wrapper import run_offline  # noqa: F401
    except ImportError as exc:
        print(exc)
    else:
        raise SystemExit("run_offline imported without cryosparc-tools")
    """
    result = _without_extra(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["cryosparc-tools is not installed; pip install 'pupick[cryosparc]'"]


def test_missing_tools_message_names_only_the_extra() -> None:
    assert missing_tools_message(ModuleNotFoundError("x", name="cryosparc.dataset")) == (
        "cryosparc-tools is not installed; pip install 'pupick[cryosparc]'"
    )
    too_old = missing_tools_message(ImportError("cannot import name 'APIError'", name="cryosparc.errors"))
    assert too_old is not None and too_old.startswith("cryosparc-tools is too old or broken")
    assert "--upgrade" in too_old
    # with cryosparc-tools present (as here), a missing httpx is named as itself
    assert missing_tools_message(ModuleNotFoundError("x", name="httpx")) == (
        "httpx is not installed; pip install 'pupick[cryosparc]'"
    )
    assert missing_tools_message(ModuleNotFoundError("x", name="yaml")) is None
    assert missing_tools_message(ImportError("x")) is None
