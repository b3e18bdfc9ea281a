"""The wrapper's own error: a failure talking to cryoSPARC, named in one line."""

from __future__ import annotations

from pupick_ext import PupickError


class CryosparcError(PupickError):
    """cryoSPARC cannot be reached, rejects the credentials, or lacks a project, job or output.

    Like every :class:`PupickError`, its ``str()`` is one line fit for stderr and the job log;
    it never contains a password.
    """
