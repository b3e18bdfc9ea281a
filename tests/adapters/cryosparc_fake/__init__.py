"""A loopback fake of the CryoSPARC 5.0 API, for driving the real cryosparc-tools client in tests.

Usage::

    state = FakeCryosparc(email="ali@example.com", password="secret")
    state.add_project("P1", project_dir)
    with serve(state) as fake:
        cs = CryoSPARC(fake.base_url, email="ali@example.com", password="secret")

Only the operations the pupick workflow calls are served (see ``routes.ROUTES``).
"""

from .routes import ROUTES, openapi_document
from .server import RunningFake, serve
from .state import SLOT_FIELDS, FakeCryosparc, FakeError, FakeJob

__all__ = [
    "ROUTES",
    "SLOT_FIELDS",
    "FakeCryosparc",
    "FakeError",
    "FakeJob",
    "RunningFake",
    "openapi_document",
    "serve",
]
