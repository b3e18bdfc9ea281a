"""What training learns from: labels in working pixels, the hold-out split, pi and the label masks.

Everything here is decided once, before the first step, from the prepared micrographs,
the labels and the settings; the result is a :class:`TrainData` the rest of training reads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io.picks import Picks
from ..prep.preprocess import PreparedMicrograph
from ..settings import TrainSettings
from .sampling import IGNORE, TrainingImage, label_mask, positive_fraction_pi

log = logging.getLogger(__name__)

#: fewest labelled micrographs for holding out whole micrographs; with one, a strip of it is
#: held out instead. Whole micrographs won on the ASPIRE bench even with 2-3 labelled: AP
#: 0.872/0.866 against 0.846/0.833 for strips (medium), 0.660 against 0.633 (hard), as the
#: held-out micrograph measures what picking needs (another micrograph), a strip does not.
MIN_HOLDOUT_MICROGRAPHS = 2


@dataclass
class TrainData:
    """The labelled micrographs, split into training and held-out data, and the class prior."""

    #: every labelled micrograph by name
    by_name: dict[str, PreparedMicrograph]
    #: (row, col) label positions in working pixels, per labelled micrograph
    working_labels: dict[str, np.ndarray]
    train_names: list[str]
    holdout_names: list[str]
    #: held-out column bands [c0, c1) (region hold-out), or empty (whole micrographs held out)
    strips: dict[str, tuple[int, int]]
    #: the labels training may use, per training micrograph (none inside a held-out strip)
    train_labels: dict[str, np.ndarray]
    #: particle radius in working pixels
    radius: float
    #: expected particles per micrograph (given, or suggested from the labels)
    expected: float
    #: positive fraction of the unlabeled pixels
    pi: float
    #: number of labelled particles given (part of the checkpoint fingerprint)
    n_labels: int

    @property
    def n_train_labels(self) -> int:
        """Labels training may use, over all training micrographs."""
        return int(sum(len(v) for v in self.train_labels.values()))


def suggest_expected_particles(labelled_counts: Sequence[int], area: float, radius: float) -> float:
    """A guess at particles per micrograph when the user gives none.

    Users label the clearest particles, so the guess is twice the mean labelled count per
    labelled micrograph, capped at what fits at 50% area coverage. Logged so users can
    correct it with --expected-particles.
    """
    mean = float(np.mean(labelled_counts)) if len(labelled_counts) else 1.0
    capacity = 0.5 * area / (math.pi * radius**2)
    return float(max(1.0, min(2.0 * mean, capacity)))


def split_holdout(names: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) micrograph names; at least one of each when there are >= 2 and fraction > 0."""
    names = list(names)
    if fraction <= 0 or len(names) < 2:
        return names, []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    n_hold = min(len(names) - 1, max(1, int(round(fraction * len(names)))))
    hold = sorted(names[i] for i in order[:n_hold])
    return [n for n in names if n not in hold], hold


def holdout_strips(shapes: dict[str, tuple[int, int]], fraction: float,
                   seed: int) -> dict[str, tuple[int, int]]:
    """A held-out band of columns [c0, c1) per micrograph, ``fraction`` of its width, at a seeded place."""
    rng = np.random.default_rng(seed)
    strips = {}
    for name in sorted(shapes):
        width = shapes[name][1]
        span = max(1, int(round(fraction * width)))
        c0 = int(rng.integers(0, max(width - span, 0) + 1))
        strips[name] = (c0, c0 + span)
    return strips


def prepare_data(prepared: Sequence[PreparedMicrograph], labels: Picks, settings: TrainSettings) -> TrainData:
    """Labels in working pixels, the hold-out (whole micrographs or strips), radius and pi; logs pi."""
    by_name = {p.name: p for p in prepared}
    labelled = [p.name for p in prepared if len(labels.for_micrograph(p.name))]
    if not labelled:
        raise InputError("no labelled particle falls on any of the given micrographs")
    working = {n: _working_labels(by_name[n], labels.for_micrograph(n)) for n in labelled}
    by_region = settings.holdout_by == "region" or (
        settings.holdout_by == "auto" and len(labelled) < MIN_HOLDOUT_MICROGRAPHS)
    strips: dict[str, tuple[int, int]] = {}
    if by_region and settings.holdout_fraction > 0:
        train_names, holdout_names = list(labelled), list(labelled)
        strips = holdout_strips({n: by_name[n].image.shape for n in labelled}, settings.holdout_fraction,
                                settings.seed)
    else:
        train_names, holdout_names = split_holdout(labelled, settings.holdout_fraction, settings.seed)
    train_labels = {n: _outside_strip(working[n], strips.get(n)) for n in train_names}
    radius = float(np.mean([settings.particle_diameter / 2 / p.working_pixel_size
                            if p.working_pixel_size else 0 for p in prepared])) or 10.0
    areas = [by_name[n].image.size for n in train_names]
    counts = [len(working[n]) for n in train_names]
    if settings.expected_particles is None:
        expected = suggest_expected_particles(counts, float(np.mean(areas)), radius)
        log.info("no expected particle count given: assuming %.0f per micrograph (2x the mean labelled "
                 "count); set --expected-particles if you know better", expected)
    else:
        expected = float(settings.expected_particles)
    pi = positive_fraction_pi(expected, settings.training_radius, float(np.mean(areas)))
    log.info("pi (positive fraction of unlabeled pixels) = %.4f", pi)
    return TrainData(by_name, working, train_names, holdout_names, strips, train_labels, radius, expected, pi,
                     len(labels))


def training_images(data: TrainData, training_radius: int) -> list[TrainingImage]:
    """What the patch sampler draws from: each training micrograph, its label mask and labels."""
    return [TrainingImage(data.by_name[n].image, _training_mask(data, n, training_radius),
                          data.train_labels[n]) for n in data.train_names]


def _working_labels(prepared: PreparedMicrograph, picks: Picks) -> np.ndarray:
    cols, rows = prepared.to_working(picks.x, picks.y)
    h, w = prepared.image.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return np.stack([rows[inside], cols[inside]], axis=1)


def _outside_strip(rows_cols: np.ndarray, strip: tuple[int, int] | None) -> np.ndarray:
    """The labels that training may use (all of them unless a strip is held out)."""
    if strip is None:
        return rows_cols
    c0, c1 = strip
    return rows_cols[(rows_cols[:, 1] < c0) | (rows_cols[:, 1] >= c1)]


def _training_mask(data: TrainData, name: str, training_radius: int) -> np.ndarray:
    """The label mask of a training micrograph, IGNORE over its held-out strip."""
    labels = data.working_labels[name]
    mask = label_mask(data.by_name[name].image.shape, labels[:, 0], labels[:, 1], training_radius)
    if name in data.strips:
        c0, c1 = data.strips[name]
        mask[:, c0:c1] = IGNORE
    return mask
