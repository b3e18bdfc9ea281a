"""Credentials and the cryosparc-tools client, with every failure turned into one line.

Credentials come from a config file (``--config``) and/or the environment variables
cryosparc-tools itself reads: ``CRYOSPARC_BASE_URL`` (or ``CRYOSPARC_MASTER_HOSTNAME`` +
``CRYOSPARC_BASE_PORT``), ``CRYOSPARC_EMAIL``, ``CRYOSPARC_PASSWORD``. The password never
appears in a log line, an error message, a ``repr`` or saved settings.

Config file, TOML (``.toml``) or INI, one section ``[cryosparc]``::

    [cryosparc]
    base_url = "https://cryosparc.example.org"    # or host = ... and base_port = 39000
    email = "ali@example.org"
    password = "..."                               # keep the file private: chmod 600
"""

from __future__ import annotations

import configparser
import logging
import os
import stat
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pupick_ext import first_line

from .errors import CryosparcError

if TYPE_CHECKING:
    from cryosparc.controllers.job import JobController
    from cryosparc.controllers.project import ProjectController
    from cryosparc.tools import CryoSPARC

logger = logging.getLogger(__name__)

_KEYS = ("base_url", "host", "base_port", "email", "password")
_ENV = {
    "base_url": "CRYOSPARC_BASE_URL",
    "host": "CRYOSPARC_MASTER_HOSTNAME",
    "base_port": "CRYOSPARC_BASE_PORT",
    "email": "CRYOSPARC_EMAIL",
    "password": "CRYOSPARC_PASSWORD",
}


@dataclass(frozen=True)
class Credentials:
    """Where cryoSPARC is and who logs in. ``repr`` hides the password."""

    base_url: str | None = None
    host: str | None = None
    base_port: int | None = None
    email: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The instance URL without any user information (safe to print)."""
        if self.base_url:
            parts = urllib.parse.urlsplit(self.base_url)
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        if self.host or self.base_port:
            return f"http://{self.host or 'localhost'}:{self.base_port or 39000}"
        return "<no cryoSPARC URL>"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CryosparcError("config file not found", path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning("%s is readable by other users; it holds a password (chmod 600 %s)", path, path)
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError as err:  # Python 3.10
            raise CryosparcError(
                "TOML config files need Python 3.11+; use an INI file instead", path
            ) from err
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise CryosparcError(f"not valid TOML ({err})", path) from None
        section = data.get("cryosparc", data)
    else:
        parser = configparser.ConfigParser(interpolation=None)  # passwords may contain %
        try:
            parser.read_string(text)
        except configparser.Error as err:
            raise CryosparcError(f"not a valid INI file ({type(err).__name__})", path) from None
        if not parser.has_section("cryosparc"):
            raise CryosparcError("has no [cryosparc] section", path)
        section = {k: v.strip().strip('"') for k, v in parser.items("cryosparc")}
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise CryosparcError(f"unknown keys {', '.join(unknown)} (known: {', '.join(_KEYS)})", path)
    return dict(section)


def load_credentials(
    config: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Credentials:
    """Credentials from ``config`` (if given) with the environment filling what it lacks.

    Raises:
        CryosparcError: unreadable config file, bad port, or no URL at all.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {k: environ.get(v) or None for k, v in _ENV.items()}
    if config is not None:
        from_file = _read_config(Path(config))
        if from_file.get("base_url") or from_file.get("host") or from_file.get("base_port"):
            values.update(base_url=None, host=None, base_port=None)  # the file's address wins as a whole
        values.update({k: v for k, v in from_file.items() if v not in (None, "")})
    port = values.get("base_port")
    if port is not None:
        try:
            values["base_port"] = int(port)
        except ValueError:
            raise CryosparcError(f"base port must be a number, got {port!r}") from None
    if values.get("base_url") and (values.get("host") or values.get("base_port")):
        values["host"] = values["base_port"] = None  # base_url wins, as in cryosparc-tools
    credentials = Credentials(**values)
    if not (credentials.base_url or credentials.host or credentials.base_port):
        raise CryosparcError(
            "no cryoSPARC address: set CRYOSPARC_BASE_URL (or CRYOSPARC_MASTER_HOSTNAME and "
            "CRYOSPARC_BASE_PORT), or give --config with base_url"
        )
    return credentials


def _reason(err: BaseException) -> str:
    """One short line saying why a request failed, without URLs' user info or secrets."""
    import httpx
    from cryosparc.errors import APIError

    if isinstance(err, APIError):
        detail = err.data.get("detail") if isinstance(err.data, dict) else None
        if isinstance(detail, list):  # validation errors
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return f"HTTP {err.code}" + (f": {detail}" if detail else "")
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    if isinstance(err, httpx.TransportError):
        return f"cannot reach the server ({type(err).__name__})"
    return first_line(err)


def connect(credentials: Credentials, timeout: float = 300) -> CryoSPARC:
    """Log in to cryoSPARC with cryosparc-tools.

    Without email and password, a session saved by ``python -m cryosparc.tools login`` is used.

    Raises:
        CryosparcError: unreachable, credentials rejected, or not a compatible cryoSPARC.
    """
    import httpx
    from cryosparc.errors import APIError
    from cryosparc.tools import CryoSPARC

    url = credentials.url
    kwargs: dict[str, Any] = {
        "email": credentials.email,
        "password": credentials.password,
        "timeout": timeout,
    }
    if credentials.base_url:
        kwargs["base_url"] = credentials.base_url
    else:
        kwargs.update(base_url=None, host=credentials.host, base_port=credentials.base_port)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cs = CryoSPARC(**kwargs)
        except ValueError as err:  # no credentials and no saved session
            if isinstance(err, APIError):
                raise CryosparcError(f"cryoSPARC at {url}: {_reason(err)}") from None
            raise CryosparcError(
                f"no login for cryoSPARC at {url}: set CRYOSPARC_EMAIL and CRYOSPARC_PASSWORD, "
                "give --config, or run 'python -m cryosparc.tools login'"
            ) from None
        except RuntimeError as err:  # cryosparc-tools wraps every connection failure in RuntimeError
            cause = err.__cause__
            if isinstance(cause, APIError) and cause.code in (401, 403):
                raise CryosparcError(
                    f"cryoSPARC at {url} rejected the email/password ({_reason(cause)})"
                ) from None
            reason = _reason(cause) if cause is not None else "unknown error"
            raise CryosparcError(f"cannot connect to cryoSPARC at {url}: {reason}") from None
        except httpx.HTTPError as err:  # failure while downloading the API schema
            raise CryosparcError(f"cannot connect to cryoSPARC at {url}: {_reason(err)}") from None
    for warning in caught:
        text = str(warning.message)
        if "may not be compatible" in text:
            logger.warning(
                "cryoSPARC at %s may not match cryosparc-tools' version; see docs/cryosparc.md", url
            )
        elif not text.startswith("*** API client"):
            logger.debug("cryosparc-tools: %s", first_line(text))
    logger.info("connected to cryoSPARC at %s", url)
    return cs


def describe_api_error(err: BaseException, what: str) -> CryosparcError:
    """A :class:`CryosparcError` for a failed request about ``what`` (e.g. "job P3-J12")."""
    from cryosparc.errors import APIError

    if isinstance(err, APIError) and err.code == 404:
        return CryosparcError(f"{what} not found ({_reason(err)})")
    return CryosparcError(f"{what}: {_reason(err)}")


def _api_errors() -> tuple[type[BaseException], ...]:
    import httpx
    from cryosparc.errors import APIError

    return (APIError, httpx.HTTPError)


def find_project(cs: CryoSPARC, project_uid: str) -> ProjectController:
    """The project, or a :class:`CryosparcError` naming it."""
    try:
        return cs.find_project(project_uid)
    except _api_errors() as err:
        raise describe_api_error(err, f"project {project_uid}") from None


def check_workspace(project: ProjectController, workspace_uid: str) -> None:
    """Raise a :class:`CryosparcError` unless the workspace exists."""
    try:
        project.find_workspace(workspace_uid)
    except _api_errors() as err:
        raise describe_api_error(err, f"workspace {project.uid}-{workspace_uid}") from None


def find_output(project: ProjectController, job_uid: str, output: str) -> JobController:
    """The job holding ``output``, or a :class:`CryosparcError` naming what is missing."""
    try:
        job = project.find_job(job_uid)
    except _api_errors() as err:
        raise describe_api_error(err, f"job {project.uid}-{job_uid}") from None
    outputs = job.outputs
    if output not in outputs:
        names = ", ".join(sorted(outputs)) or "none"
        raise CryosparcError(f"job {project.uid}-{job_uid} has no output {output!r} (its outputs: {names})")
    return job
