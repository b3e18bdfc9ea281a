"""PNG pictures in the job directory, drawn by the engine's ``plot_*`` functions.

A picture that cannot be drawn is logged as a warning: pictures help the user judge the
picks, but a job that wrote correct coordinates has done its work.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pupick_ext import (
    PickerModel,
    Picks,
    plot_picks,
    plot_score_histogram,
    plot_threshold_table,
    plot_training,
    read_coordinates,
)

from .params import JobParams

log = logging.getLogger(__name__)

TRAINING_PNG = "training_curve.png"
THRESHOLDS_PNG = "threshold_table.png"
HISTOGRAM_PNG = "score_histogram.png"
PICKS_PNG = "picks_{name}.png"


def _draw(path: Path, draw: Callable[[Path], Any]) -> None:
    """Draw one picture (the engine's plot_* functions write atomically)."""
    try:
        draw(path)
        log.info("Picture: %s", path)
    except Exception as exc:  # a picture is a convenience, never a reason to fail the job
        log.warning("Could not draw %s: %s: %s", path.name, type(exc).__name__, exc)


def training_pictures(job_dir: Path, result: Any) -> None:
    """Training curve and threshold table of a finished training."""
    if getattr(result, "history", None):
        _draw(job_dir / TRAINING_PNG, lambda png: plot_training(result.history, png))
    if getattr(result, "threshold_table", None):
        _draw(
            job_dir / THRESHOLDS_PNG,
            lambda png: plot_threshold_table(
                result.threshold_table, png, getattr(result, "recommended_threshold", None)
            ),
        )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _draw_picks(micrograph_path: Path, picks: Picks, out: Path, radius: float) -> None:
    plot_picks(micrograph_path, picks, out, radius)


def picking_pictures(
    job_dir: Path,
    picked: list[tuple[Any, Picks]],
    coordinate_files: list[tuple[str, str]],
    model: PickerModel,
    params: JobParams,
) -> None:
    """Picks over the first few micrographs of this run and a histogram of all the job's scores."""
    info = getattr(model, "info", {}) or {}
    diameter = params.diameter or info.get("particle_diameter")
    threshold = params.threshold if params.threshold is not None else info.get("recommended_threshold")
    for micrograph, picks in picked[: params.pictures]:
        pixel = micrograph.entry.pixel_size  # original A/px (the model's pixel size is the working one)
        radius = diameter / 2 / pixel if diameter and pixel else 20.0
        png = job_dir / PICKS_PNG.format(name=_safe(micrograph.entry.name))
        _draw(png, functools.partial(_draw_picks, micrograph.entry.path, picks, radius=radius))
    if not coordinate_files:
        return
    try:
        scores = Picks.concat(read_coordinates(path, fmt="star") for _, path in coordinate_files)
    except Exception as exc:
        log.warning("Could not read back the coordinate files for the score histogram: %s", exc)
        return
    if len(scores):
        _draw(job_dir / HISTOGRAM_PNG, lambda out: plot_score_histogram(scores, out, threshold))
        per_mic = len(scores) / len(coordinate_files)
        log.info("All micrographs of this job: %d particles, %.1f per micrograph", len(scores), per_mic)
