"""A small cryoSPARC project on disk: micrographs, a Patch CTF-like exposures dataset and a
Manual Picker-like labelled particle dataset (a subset of the ground truth).

Datasets are built the way cryoSPARC stores them (paths relative to the project directory,
``micrograph_blob/shape = [ny, nx]``, particle fractions ``x/nx``, ``y/ny``) and also
written as ``.cs`` files into the job directories, as cryoSPARC would, for offline mode.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from cryosparc.dataset import Dataset

EXPOSURE_FIELDS = [
    ("micrograph_blob/path", "O"),
    ("micrograph_blob/idx", "<u4"),
    ("micrograph_blob/shape", "<u4", (2,)),
    ("micrograph_blob/psize_A", "<f4"),
    ("micrograph_blob/format", "O"),
    ("micrograph_blob/is_background_subtracted", "<u4"),
    ("micrograph_blob/vmin", "<f4"),
    ("micrograph_blob/vmax", "<f4"),
    ("micrograph_blob/import_sig", "<u8"),
    ("mscope_params/accel_kv", "<f4"),
    ("mscope_params/cs_mm", "<f4"),
    ("mscope_params/exp_group_id", "<u4"),
    ("ctf/type", "O"),
    ("ctf/exp_group_id", "<u4"),
    ("ctf/df1_A", "<f4"),
    ("ctf/df2_A", "<f4"),
]
MANUAL_PICK_FIELDS = [
    ("location/micrograph_uid", "<u8"),
    ("location/exp_group_id", "<u4"),
    ("location/micrograph_path", "O"),
    ("location/micrograph_shape", "<u4", (2,)),
    ("location/micrograph_psize_A", "<f4"),
    ("location/center_x_frac", "<f4"),
    ("location/center_y_frac", "<f4"),
]


@dataclass
class Scene:
    """What was built: the project directory, datasets, and truth in cryoSPARC's terms."""

    project_dir: Path
    exposures: Dataset
    labels: Dataset
    exposures_cs: Path
    labels_cs: Path
    names: list[str]  #: micrograph names (file stems), in exposure order
    shapes: dict[str, tuple[int, int]]  #: name -> (ny, nx)
    paths: dict[str, Path]  #: name -> absolute micrograph path
    pixel_size: float
    diameter: float


def build_scene(demo, project_dir: Path, label_every: int = 2) -> Scene:
    """Copy the demo micrographs into ``project_dir/J2/motioncorrected`` and describe them.

    ``demo`` is a :class:`pupick_ext.DemoData`; every ``label_every``-th true particle becomes
    a manual pick.
    """
    project_dir.mkdir(parents=True, exist_ok=True)
    mic_dir = project_dir / "J2" / "motioncorrected"
    mic_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / "J3").mkdir(exist_ok=True)
    exposures = Dataset.allocate(len(demo.micrographs), EXPOSURE_FIELDS)
    names, shapes, paths, rel_paths = [], {}, {}, []
    for i, entry in enumerate(demo.micrographs):
        uid = int(exposures["uid"][i])
        name = f"{uid:021d}_{entry.name}_patch_aligned_doseweighted"
        target = mic_dir / f"{name}.mrc"
        shutil.copyfile(entry.path, target)
        with mrcfile.open(target, header_only=True) as mrc:
            shape = (int(mrc.header.ny), int(mrc.header.nx))
        names.append(name)
        shapes[name] = shape
        paths[name] = target
        rel_paths.append(f"J2/motioncorrected/{name}.mrc")
    exposures["micrograph_blob/path"] = np.array(rel_paths, dtype=object)
    exposures["micrograph_blob/shape"] = np.array([shapes[n] for n in names], dtype=np.uint32)
    exposures["micrograph_blob/psize_A"] = np.float32(demo.pixel_size)
    exposures["micrograph_blob/format"] = np.array(["MRC"] * len(names), dtype=object)
    exposures["mscope_params/accel_kv"] = np.float32(300)
    exposures["mscope_params/cs_mm"] = np.float32(2.7)
    exposures["mscope_params/exp_group_id"] = np.uint32(1)
    exposures["ctf/type"] = np.array(["spline"] * len(names), dtype=object)
    exposures["ctf/exp_group_id"] = np.uint32(1)
    exposures["ctf/df1_A"] = np.float32(15000)
    exposures["ctf/df2_A"] = np.float32(14800)

    rows = []
    for i, entry in enumerate(demo.micrographs):
        truth = demo.truth.for_micrograph(entry.name)
        for k in range(0, len(truth), label_every):
            rows.append((i, truth.x[k], truth.y[k]))
    labels = Dataset.allocate(len(rows), MANUAL_PICK_FIELDS)
    index = np.array([r[0] for r in rows])
    ny = np.array([shapes[names[i]][0] for i in index], dtype=np.float64)
    nx = np.array([shapes[names[i]][1] for i in index], dtype=np.float64)
    labels["location/micrograph_uid"] = np.asarray(exposures["uid"])[index]
    labels["location/exp_group_id"] = np.uint32(1)
    labels["location/micrograph_path"] = np.array([rel_paths[i] for i in index], dtype=object)
    labels["location/micrograph_shape"] = np.stack([ny, nx], axis=1).astype(np.uint32)
    labels["location/micrograph_psize_A"] = np.float32(demo.pixel_size)
    labels["location/center_x_frac"] = (np.array([r[1] for r in rows]) / nx).astype(np.float32)
    labels["location/center_y_frac"] = (np.array([r[2] for r in rows]) / ny).astype(np.float32)

    exposures_cs = project_dir / "J2" / "J2_exposures.cs"
    labels_cs = project_dir / "J3" / "J3_particles.cs"
    exposures.save(exposures_cs)
    labels.save(labels_cs)
    return Scene(
        project_dir,
        exposures,
        labels,
        exposures_cs,
        labels_cs,
        names,
        shapes,
        paths,
        float(demo.pixel_size),
        float(demo.particle_diameter),
    )
