"""The engine calls both modes share: train and/or extract, with progress and pictures.

Live and offline mode differ only in where exposures and labels come from and where picks
go; both hand this module micrographs on local disk and a :class:`Reporter`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pupick_ext import (
    InputError,
    MicrographEntry,
    Picks,
    extract_iter,
    load_model,
    plot_picks,
    plot_score_histogram,
    plot_threshold_table,
    plot_training,
    read_header,
    read_micrograph,
    train,
)

from .fields import Exposure
from .options import PickOptions

logger = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where progress, messages and pictures go (the job's event log, or the terminal)."""

    def progress(self, done: int, total: int, message: str) -> None: ...
    def info(self, text: str) -> None: ...
    def picture(self, png: Path, text: str) -> None: ...
    def warn(self, text: str) -> None: ...


@dataclass
class PipelineResult:
    """What a run produced: the model (when trained) and the picks per exposure (when extracted)."""

    model_path: Path | None = None
    recommended_threshold: float | None = None
    threshold: float | None = None
    particle_diameter: float | None = None
    picks: list[tuple[Exposure, Picks]] = field(default_factory=list)
    pictures: dict[str, Path] = field(default_factory=dict)

    @property
    def n_picks(self) -> int:
        return sum(len(p) for _, p in self.picks)


def file_shape(path: Path) -> tuple[int, int]:
    """(ny, nx) of a micrograph file, from its header; InputError naming the file when it is unusable.

    The engine's header reader checks the header's size fields against the file before anything
    is allocated (mrcfile itself would first read an extended header of whatever size the header
    claims, e.g. ~0.7 GB for a text file).
    """
    shape, _ = read_header(path)
    return int(shape[0]), int(shape[1])


def check_shapes(exposures: Sequence[Exposure], local: dict[str, Path]) -> list[Exposure]:
    """Exposures with the shape of the file each points to (metadata shape when it agrees).

    Picks are in the file's pixels, so the file's shape is the one written to
    ``location/micrograph_shape``; a disagreeing metadata shape is reported.
    """
    out = []
    for exposure in exposures:
        shape = file_shape(local[exposure.name])
        if exposure.shape != (0, 0) and exposure.shape != shape:
            logger.warning(
                "%s: micrograph_blob/shape %s differs from the file's %s; using the file's",
                exposure.path,
                list(exposure.shape),
                list(shape),
            )
        out.append(exposure.with_shape(shape))
    return out


def entries_for(exposures: Sequence[Exposure], local: dict[str, Path]) -> list[MicrographEntry]:
    """Engine micrograph entries, named like the exposures, with cryoSPARC's pixel size."""
    return [MicrographEntry(local[e.name], name=e.name, pixel_size=e.pixel_size) for e in exposures]


def threshold_lines(table: Sequence[tuple[float, float, float]], recommended: float) -> list[str]:
    """The threshold table as text, one line per distinct outcome (plus the recommended row)."""
    lines, previous = [], None
    for threshold, per_micrograph, recall in table:
        outcome = (round(per_micrograph, 1), round(recall, 2))
        if outcome == previous and threshold != recommended:
            continue
        previous = outcome
        mark = "  <- recommended" if threshold == recommended else ""
        lines.append(f"{threshold:>9g}   {per_micrograph:>18.1f}   {recall:>15.2f}{mark}")
    return lines


def _safe_picture(reporter: Reporter, make: Callable[[], Path], text: str) -> Path | None:
    """Draw and report a picture; a failure to draw never fails the run."""
    try:
        png = make()
    except Exception as err:  # noqa: BLE001 - pictures are a report, not a result
        logger.warning("could not draw %s: %s", text, err)
        return None
    reporter.picture(png, text)
    return png


def run_pipeline(
    exposures: Sequence[Exposure],
    local: dict[str, Path],
    labels: Picks | None,
    options: PickOptions,
    workdir: Path,
    reporter: Reporter,
    on_picks: Callable[[Exposure, Picks], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PipelineResult:
    """Train and/or extract as ``options.mode`` says.

    Args:
        exposures: micrographs with known shapes (see :func:`check_shapes`).
        local: exposure name -> readable local file.
        labels: labelled particles named like the exposures (needed to train).
        options: mode and parameters.
        workdir: where the model, checkpoints and pictures go.
        reporter: receives progress, messages and pictures.
        on_picks: called with each micrograph's picks as soon as they exist.
        should_stop: polled by the engine between steps and micrographs (AbortRequested when True).

    Raises:
        PupickError: from the engine (bad micrograph, settings, model) or no labels to train on.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    pictures = workdir / "pictures"
    pictures.mkdir(exist_ok=True)
    entries = entries_for(exposures, local)
    result = PipelineResult()
    if options.trains:
        if labels is None or len(labels) == 0:
            raise InputError("no labelled particles to train on")
        labelled = len(labels.names)
        reporter.info(
            f"training on {len(labels)} labelled particles in {labelled} micrographs "
            f"({len(entries)} micrographs in all), diameter {options.diameter:g} A, "
            f"{options.epochs} epochs x {options.steps_per_epoch} steps"
        )
        trained = train(
            entries,
            labels,
            options.preprocess(),
            options.train_settings(),
            workdir / "training",
            progress=reporter.progress,
            should_stop=should_stop,
        )
        model = trained.model
        result.model_path = trained.model_path
        result.recommended_threshold = float(trained.recommended_threshold)
        reporter.info(
            f"model written to {trained.model_path}; recommended threshold "
            f"{trained.recommended_threshold:g} (log-likelihood ratio)"
        )
        table = threshold_lines(trained.threshold_table, trained.recommended_threshold)
        if table:
            reporter.info("threshold   particles/micrograph   held-out recall\n" + "\n".join(table))
        _safe_picture(
            reporter, lambda: plot_training(trained.history, pictures / "training.png"), "training curves"
        )
        _safe_picture(
            reporter,
            lambda: plot_threshold_table(
                trained.threshold_table, pictures / "thresholds.png", trained.recommended_threshold
            ),
            "particles per micrograph and recall against threshold",
        )
    else:
        assert options.model is not None
        model = load_model(options.model)
        result.model_path = options.model
        recommended = model.info.get("recommended_threshold")
        result.recommended_threshold = None if recommended is None else float(recommended)
    result.particle_diameter = float(model.info.get("particle_diameter") or options.diameter or 0.0)
    if not options.extracts:
        return result

    settings = options.extract_settings()
    result.threshold = settings.threshold if settings.threshold is not None else result.recommended_threshold
    reporter.info(
        f"picking {len(entries)} micrographs at threshold "
        f"{result.threshold if result.threshold is not None else 0:g}"
    )
    by_name = {e.name: e for e in exposures}
    stream = extract_iter(model, entries, settings, progress=reporter.progress, should_stop=should_stop)
    for entry, picks in stream:
        exposure = by_name[entry.name]
        result.picks.append((exposure, picks))
        if on_picks is not None:
            on_picks(exposure, picks)
    reporter.info(f"{result.n_picks} particles picked in {len(result.picks)} micrographs")
    if result.n_picks == 0 and result.picks:
        reporter.warn(
            f"no particles picked on any of the {len(result.picks)} micrographs at threshold "
            f"{result.threshold if result.threshold is not None else 0:g}: the settings pick nothing "
            "(lower --threshold, or check the model)"
        )
    if result.picks:
        exposure, first = max(result.picks, key=lambda item: len(item[1]))
        pixel_size = exposure.pixel_size or read_micrograph(local[exposure.name]).pixel_size or 1.0
        radius_px = result.particle_diameter / 2 / pixel_size
        png = _safe_picture(
            reporter,
            lambda: plot_picks(
                local[exposure.name],
                first,
                pictures / "picks.png",
                radius_px,
                title=f"{exposure.name}: {len(first)} picks",
            ),
            f"picks on {exposure.name}",
        )
        if png is not None:
            result.pictures["picks"] = png
        every = Picks.concat([p for _, p in result.picks])
        _safe_picture(
            reporter,
            lambda: plot_score_histogram(every, pictures / "scores.png", result.threshold),
            "score distribution of the picks",
        )
    return result
