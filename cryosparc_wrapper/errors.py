"""The wrapper's own errors: a failure talking to cryoSPARC, or cryosparc-tools missing, in one line."""

from __future__ import annotations

import importlib.util

from pupick_ext import PupickError

#: the modules of the ``cryosparc`` extra (pip install "pupick[cryosparc]")
_EXTRA_MODULES = ("cryosparc", "httpx")
INSTALL_HINT = "pip install 'pupick[cryosparc]'"


def missing_tools_message(exc: ImportError) -> str | None:
    """One line for an ``ImportError`` caused by the absent (or too old) ``cryosparc`` extra, else None.

    cryosparc-tools is an optional dependency: the base ``pip install pupick`` leaves it out,
    and only importing the adapter's modules that talk to it (fields, offline, live, connect)
    needs it.
    """
    top = (exc.name or "").split(".")[0]
    if top not in _EXTRA_MODULES:
        return None
    # httpx comes with cryosparc-tools: when both are absent, name the one the user installs
    package = "cryosparc-tools" if top == "cryosparc" or not _importable("cryosparc") else top
    if isinstance(exc, ModuleNotFoundError):
        return f"{package} is not installed; {INSTALL_HINT}"
    return f"{package} is too old or broken ({exc}); pip install --upgrade 'pupick[cryosparc]'"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class CryosparcError(PupickError):
    """cryoSPARC cannot be reached, rejects the credentials, or lacks a project, job or output.

    Like every :class:`PupickError`, its ``str()`` is one line fit for stderr and the job log;
    it never contains a password.
    """
