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

from .connect import Credentials, connect, load_credentials
from .errors import CryosparcError
from .fields import (
    PARTICLE_FIELDS,
    Exposure,
    exposures_from_dataset,
    fractions_to_pixels,
    particles_to_picks,
    picks_to_particles,
    pixels_to_fractions,
)
from .live import LiveResult, SourceRef, run_live
from .offline import OfflineResult, run_offline
from .options import PickOptions

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
