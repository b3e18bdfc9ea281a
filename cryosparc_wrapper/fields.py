"""Conversions at the cryoSPARC edge: exposures -> micrographs, particles <-> :class:`Picks`.

cryoSPARC stores a particle's position as fractions of the micrograph's width and height
(``location/center_x_frac``, ``location/center_y_frac``) with the micrograph's array shape
``location/micrograph_shape = [ny, nx]``. pupick's :class:`Picks` hold pixels of the
micrograph as stored, x along columns, y along rows (RELION's ``_rlnCoordinateX/Y``)::

    x = center_x_frac * nx          center_x_frac = x / nx
    y = center_y_frac * ny          center_y_frac = y / ny                 (default)
    y = (1 - center_y_frac) * ny    center_y_frac = 1 - y / ny             (flip_y=True)

``flip_y`` exists because the y direction between cryoSPARC and RELION is disputed (pyem's
csparc2star flips y by default); see docs/cryosparc.md for how to check it once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from cryosparc.dataset import Dataset

from pupick_ext import InputError, Picks

logger = logging.getLogger(__name__)

#: The particle fields cryoSPARC's pickers (Blob / Template Picker, Manual Picker) write, with
#: their dtypes (cryosparc-tools tests/conftest.py; ``micrograph_psize_A`` since cryoSPARC 4).
PARTICLE_FIELDS: tuple[tuple[Any, ...], ...] = (
    ("location/micrograph_uid", "<u8"),
    ("location/exp_group_id", "<u4"),
    ("location/micrograph_path", "O"),
    ("location/micrograph_shape", "<u4", (2,)),
    ("location/micrograph_psize_A", "<f4"),
    ("location/center_x_frac", "<f4"),
    ("location/center_y_frac", "<f4"),
    ("location/min_dist_A", "<f4"),
    ("pick_stats/ncc_score", "<f4"),
    ("pick_stats/power", "<f4"),
    ("pick_stats/template_idx", "<u4"),
    ("pick_stats/angle_rad", "<f4"),
)
#: Output slots of the particles output.
PARTICLE_SLOTS: tuple[str, ...] = ("location", "pick_stats")
#: Largest float32 below 1: fractions are kept in [0, 1).
_BELOW_ONE = np.float32(1) - np.finfo(np.float32).epsneg


@dataclass(frozen=True)
class Exposure:
    """One micrograph as cryoSPARC describes it.

    ``path`` is ``micrograph_blob/path`` as stored (relative to the project directory);
    ``shape`` is ``(ny, nx)``, ``(0, 0)`` while unknown; ``name`` is the stable key that ties
    picks to the micrograph (the file name without extension, unique within the list).
    """

    uid: int
    path: str
    shape: tuple[int, int]
    pixel_size: float | None
    exp_group_id: int
    name: str

    def with_shape(self, shape: tuple[int, int]) -> Exposure:
        return replace(self, shape=(int(shape[0]), int(shape[1])))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stem(path: str) -> str:
    name = PurePosixPath(path).name
    for ext in (".mrcs", ".mrc", ".tiff", ".tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def exposures_from_dataset(dset: Dataset, origin: str) -> list[Exposure]:
    """Exposures (micrographs) from a cryoSPARC exposure dataset.

    Args:
        dset: rows with ``uid`` and ``micrograph_blob/path`` (Patch CTF, Curate Exposures,
            Patch Motion outputs); ``micrograph_blob/shape``, ``micrograph_blob/psize_A`` and
            ``mscope_params/exp_group_id`` (or ``ctf/exp_group_id``) are used when present.
        origin: where the dataset came from (a job output or a file), for error messages.

    Raises:
        InputError: no rows, no ``micrograph_blob/path`` field, or empty paths.
    """
    fields = set(dset.fields())
    if len(dset) == 0:
        raise InputError("holds no exposures", origin)
    if "micrograph_blob/path" not in fields:
        raise InputError(
            "exposures carry no micrograph_blob/path; give the exposures of Patch CTF, Curate "
            "Exposures or Patch Motion (motion-corrected micrographs), not movies",
            origin,
        )
    paths = [_text(p) for p in dset["micrograph_blob/path"]]
    empty = sum(1 for p in paths if not p)
    if empty:
        raise InputError(f"{empty} of {len(paths)} exposures have an empty micrograph_blob/path", origin)
    n = len(paths)
    shapes = (
        np.asarray(dset["micrograph_blob/shape"]).reshape(n, -1)[:, :2]
        if "micrograph_blob/shape" in fields
        else np.zeros((n, 2), dtype=int)
    )
    psizes = (
        np.asarray(dset["micrograph_blob/psize_A"], dtype=float)
        if "micrograph_blob/psize_A" in fields
        else np.zeros(n)
    )
    groups = np.zeros(n, dtype=int)
    for name in ("mscope_params/exp_group_id", "ctf/exp_group_id"):
        if name in fields:
            groups = np.asarray(dset[name], dtype=int)
            break
    stems = [_stem(p) for p in paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    uids = np.asarray(dset["uid"], dtype=np.uint64)
    return [
        Exposure(
            uid=int(uid),
            path=path,
            shape=(int(shape[0]), int(shape[1])),
            pixel_size=float(psize) if psize > 0 else None,
            exp_group_id=int(group),
            name=stem if counts[stem] == 1 else f"{stem}_{uid}",
        )
        for uid, path, shape, psize, group, stem in zip(
            uids, paths, shapes, psizes, groups, stems, strict=True
        )
    ]


def fractions_to_pixels(
    x_frac: np.ndarray, y_frac: np.ndarray, shape: np.ndarray, flip_y: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x along columns, y along rows) from cryoSPARC fractions.

    ``shape`` is ``[ny, nx]`` per row (an array of shape (n, 2)) or one ``(ny, nx)``.
    """
    shape = np.asarray(shape, dtype=np.float64).reshape(-1, 2)
    ny, nx = shape[:, 0], shape[:, 1]
    x = np.asarray(x_frac, dtype=np.float64) * nx
    y_frac = np.asarray(y_frac, dtype=np.float64)
    y = (1.0 - y_frac) * ny if flip_y else y_frac * ny
    return x, y


def pixels_to_fractions(
    x: np.ndarray, y: np.ndarray, shape: np.ndarray, flip_y: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """cryoSPARC fractions in [0, 1) from pixel coordinates; inverse of :func:`fractions_to_pixels`."""
    shape = np.asarray(shape, dtype=np.float64).reshape(-1, 2)
    ny, nx = shape[:, 0], shape[:, 1]
    x_frac = np.asarray(x, dtype=np.float64) / nx
    y_frac = np.asarray(y, dtype=np.float64) / ny
    if flip_y:
        y_frac = 1.0 - y_frac
    return np.clip(x_frac, 0, _BELOW_ONE), np.clip(y_frac, 0, _BELOW_ONE)


def particles_to_picks(dset: Dataset, exposures: list[Exposure], origin: str, flip_y: bool = False) -> Picks:
    """Picks (named after the exposures) from a particle dataset with a ``location`` slot.

    Particles are matched to exposures by ``location/micrograph_uid``, then by
    ``location/micrograph_path`` (path, then file stem); particles on micrographs that are not
    in ``exposures`` are dropped with a warning. The particle's own
    ``location/micrograph_shape`` is used when present, the exposure's otherwise.

    Raises:
        InputError: no ``location`` fields, or no particle lies on any of the exposures.
    """
    fields = set(dset.fields())
    if len(dset) == 0:
        raise InputError("holds no particles: nothing to train on", origin)
    required = {"location/center_x_frac", "location/center_y_frac"}
    if not required <= fields:
        raise InputError(
            "particles carry no location/center_x_frac, location/center_y_frac; give picked "
            "particles (Manual Picker 'particles', a Select 2D 'particles_selected')",
            origin,
        )
    if "location/micrograph_uid" not in fields and "location/micrograph_path" not in fields:
        raise InputError(
            "particles carry neither location/micrograph_uid nor location/micrograph_path", origin
        )
    n = len(dset)
    by_uid = {e.uid: e for e in exposures}
    by_path = {e.path: e for e in exposures}
    by_stem = {_stem(e.path): e for e in exposures}
    mic_uids = (
        np.asarray(dset["location/micrograph_uid"], dtype=np.uint64)
        if "location/micrograph_uid" in fields
        else np.zeros(n, dtype=np.uint64)
    )
    mic_paths = (
        [_text(p) for p in dset["location/micrograph_path"]]
        if "location/micrograph_path" in fields
        else [""] * n
    )
    matched: list[Exposure | None] = []
    for uid, path in zip(mic_uids, mic_paths, strict=True):
        exposure = by_uid.get(int(uid)) or by_path.get(path) or (by_stem.get(_stem(path)) if path else None)
        matched.append(exposure)
    keep = np.array([e is not None for e in matched], dtype=bool)
    if not keep.any():
        raise InputError(
            f"none of the {n} particles lies on one of the {len(exposures)} exposures "
            "(matched by location/micrograph_uid and micrograph_path)",
            origin,
        )
    if not keep.all():
        logger.warning(
            "%s: %d of %d particles lie on micrographs not among the exposures; ignored",
            origin,
            int((~keep).sum()),
            n,
        )
    exps = [e for e in matched if e is not None]
    shapes = np.array([e.shape for e in exps], dtype=np.float64).reshape(-1, 2)
    if "location/micrograph_shape" in fields:
        own = np.asarray(dset["location/micrograph_shape"], dtype=np.float64).reshape(n, -1)[keep, :2]
        usable = (own > 0).all(axis=1)
        shapes[usable] = own[usable]
    if (shapes <= 0).any():
        raise InputError(
            "micrograph shape unknown for some particles (no location/micrograph_shape and no "
            "micrograph_blob/shape)",
            origin,
        )
    for name in ("location/center_x_frac", "location/center_y_frac"):
        values = np.asarray(dset[name], dtype=np.float64)
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise InputError(
                f"{bad} of {n} particles have a NaN or infinite {name}; such labels cannot be placed",
                origin,
            )
    x, y = fractions_to_pixels(
        np.asarray(dset["location/center_x_frac"])[keep],
        np.asarray(dset["location/center_y_frac"])[keep],
        shapes,
        flip_y=flip_y,
    )
    score = np.full(x.size, np.nan)
    return Picks(np.array([e.name for e in exps], dtype=object), x, y, score)


def _sigmoid(score: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(np.isnan(score), 0.0, 1.0 / (1.0 + np.exp(-np.nan_to_num(score))))


def picks_to_particles(
    items: Iterable[tuple[Exposure, Picks]], min_dist_A: float, flip_y: bool = False
) -> Dataset:
    """A particle dataset with the fields of cryoSPARC's pickers (:data:`PARTICLE_FIELDS`).

    Args:
        items: (exposure, picks on that exposure) pairs; exposures must have a known shape.
        min_dist_A: ``location/min_dist_A``, the picker's minimum separation (Angstrom).
        flip_y: store ``1 - y / ny`` instead of ``y / ny`` (see module docstring).

    ``pick_stats/ncc_score`` holds the classifier's probability (sigmoid of the logit, in
    [0, 1]) and ``pick_stats/power`` the logit itself, so cryoSPARC's Inspect Picks sliders
    threshold pupick's score; ``template_idx`` and ``angle_rad`` are 0. Row uids are random
    (cryoSPARC's convention for new particles).
    """
    pairs = [(e, p) for e, p in items if len(p)]
    total = sum(len(p) for _, p in pairs)
    dset = Dataset.allocate(total, list(PARTICLE_FIELDS))
    if total == 0:
        return dset
    exposure_rows = [e for e, p in pairs for _ in range(len(p))]
    shapes = np.array([e.shape for e in exposure_rows], dtype=np.int64)
    if (shapes <= 0).any():
        raise ValueError("picks_to_particles needs exposures with a known shape")
    x = np.concatenate([p.x for _, p in pairs])
    y = np.concatenate([p.y for _, p in pairs])
    score = np.concatenate([p.score for _, p in pairs])
    x_frac, y_frac = pixels_to_fractions(x, y, shapes, flip_y=flip_y)
    dset["location/micrograph_uid"] = np.array([e.uid for e in exposure_rows], dtype=np.uint64)
    dset["location/exp_group_id"] = np.array([e.exp_group_id for e in exposure_rows], dtype=np.uint32)
    dset["location/micrograph_path"] = np.array([e.path for e in exposure_rows], dtype=object)
    dset["location/micrograph_shape"] = shapes.astype(np.uint32)
    dset["location/micrograph_psize_A"] = np.array(
        [e.pixel_size or 0.0 for e in exposure_rows], dtype=np.float32
    )
    dset["location/center_x_frac"] = x_frac.astype(np.float32)
    dset["location/center_y_frac"] = y_frac.astype(np.float32)
    dset["location/min_dist_A"] = np.float32(min_dist_A)
    dset["pick_stats/ncc_score"] = _sigmoid(score).astype(np.float32)
    dset["pick_stats/power"] = np.nan_to_num(score, nan=0.0).astype(np.float32)
    dset["pick_stats/template_idx"] = np.uint32(0)
    dset["pick_stats/angle_rad"] = np.float32(0)
    return dset
