"""cryoSPARC adapter for pupick (through cryosparc-tools).

Use from a cryosparc-tools script or notebook::

    from cryosparc.tools import CryoSPARC
    from cryosparc_wrapper import PickOptions, run_live

    cs = CryoSPARC("https://cryosparc.example.org", email=..., password=...)
    result = run_live("P3", "W1", exposures="J12", particles="J14",
                      options=PickOptions(diameter=150), cs=cs)
    print(result.job_uid, result.n_particles)

or without a connection, from exported ``.cs`` files::

    from cryosparc_wrapper import PickOptions, run_offline
    run_offline(["J12_exposures.cs"], ["J14_particles.cs"], project_dir="/data/P3",
                out_dir="/data/P3/imports/pupick", options=PickOptions(diameter=150))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# these modules import cryosparc-tools only inside the functions that talk to cryoSPARC
from .connect import Credentials, connect, load_credentials
from .errors import CryosparcError, missing_tools_message
from .options import PickOptions

#: public name -> the module that defines it, for the names that need cryosparc-tools (its
#: Dataset) to import. They are imported on first use (PEP 562), so that ``pupick-cryosparc
#: --help`` and the one-line "cryosparc-tools is not installed" error work in an installation
#: without the ``cryosparc`` extra.
_SOURCES: dict[str, str] = {
    "PARTICLE_FIELDS": "fields",
    "Exposure": "fields",
    "LiveResult": "live",
    "OfflineResult": "offline",
    "SourceRef": "live",
    "exposures_from_dataset": "fields",
    "fractions_to_pixels": "fields",
    "particles_to_picks": "fields",
    "picks_to_particles": "fields",
    "pixels_to_fractions": "fields",
    "run_live": "live",
    "run_offline": "offline",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'cryosparc_wrapper' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    except ImportError as exc:
        message = missing_tools_message(exc)
        if message is None:
            raise
        raise ImportError(message, name=exc.name) from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static type checkers see: the eager imports
    from .fields import (  # noqa: F401
        PARTICLE_FIELDS,
        Exposure,
        exposures_from_dataset,
        fractions_to_pixels,
        particles_to_picks,
        picks_to_particles,
        pixels_to_fractions,
    )
    from .live import LiveResult, SourceRef, run_live  # noqa: F401
    from .offline import OfflineResult, run_offline  # noqa: F401

__all__ = [
    "PARTICLE_FIELDS",
    "Credentials",
    "CryosparcError",
    "Exposure",
    "LiveResult",
    "OfflineResult",
    "PickOptions",
    "SourceRef",
    "connect",
    "exposures_from_dataset",
    "fractions_to_pixels",
    "load_credentials",
    "particles_to_picks",
    "picks_to_particles",
    "pixels_to_fractions",
    "run_live",
    "run_offline",
]
