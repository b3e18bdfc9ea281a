"""What the cryoSPARC adapter tests share: credentials, fast settings, the scene loader.

Kept in the fake's package (not in conftest.py) so test modules import it by a unique name.
"""

from __future__ import annotations

from dataclasses import dataclass

from .scene import Scene
from .server import RunningFake
from .state import FakeCryosparc

EMAIL = "ali@example.org"
PASSWORD = "s3cret-Pa55%word"  # a value that must never appear in logs or messages
#: tiny training so the whole file stays fast on 2 CPU cores
FAST = dict(epochs=1, steps_per_epoch=2, num_threads=2, threshold=-20.0)

#: What cryoSPARC's pickers write (cryosparc-tools tests/conftest.py, T20S_PARTICLES_PASSTHROUGH
#: for location/*, the pick_stats result of the same file; plus location/micrograph_psize_A).
PICKER_DESCR = [
    ("uid", "<u8"),
    ("location/micrograph_uid", "<u8"),
    ("location/exp_group_id", "<u4"),
    ("location/micrograph_path", "|O"),
    ("location/micrograph_shape", "<u4", (2,)),
    ("location/micrograph_psize_A", "<f4"),
    ("location/center_x_frac", "<f4"),
    ("location/center_y_frac", "<f4"),
    ("location/min_dist_A", "<f4"),
    ("pick_stats/ncc_score", "<f4"),
    ("pick_stats/power", "<f4"),
    ("pick_stats/template_idx", "<u4"),
    ("pick_stats/angle_rad", "<f4"),
]


@dataclass
class Live:
    """A running fake with the scene loaded: J2 (exposures), J3 (manual picks), W1."""

    fake: RunningFake
    state: FakeCryosparc
    scene: Scene

    @property
    def url(self) -> str:
        return self.fake.base_url

    def credentials(self, password: str = PASSWORD):
        from cryosparc_wrapper import Credentials

        return Credentials(base_url=self.fake.base_url, email=EMAIL, password=password)


def load_scene(state: FakeCryosparc, scene: Scene) -> None:
    state.add_project("P1", scene.project_dir)
    state.add_workspace("P1", "W1")
    state.add_completed_job(
        "P1",
        "W1",
        "J2",
        "patch_ctf_estimation_multi",
        "Patch CTF",
        {"exposures": ("exposure", scene.exposures)},
    )
    state.add_completed_job(
        "P1", "W1", "J3", "manual_picker_v2", "Manual Picker", {"particles": ("particle", scene.labels)}
    )
