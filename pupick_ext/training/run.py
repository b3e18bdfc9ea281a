"""The one entry of training: prepared micrographs and labels in, a trained model and its files out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..io.picks import Picks
from ..network.model_io import PickerModel
from ..prep.preprocess import PreparedMicrograph
from ..settings import PreprocessSettings, Progress, ShouldStop, TrainSettings
from .collectives import barrier
from .loop import fit
from .metadata import model_info, run_record
from .outputs import MODEL_FILE, TrainResult, write_outputs
from .state import REFIT_CHECKPOINT_FILE, TrainState, build_state
from .validate import threshold_table

log = logging.getLogger(__name__)


def train_model(prepared: Sequence[PreparedMicrograph], labels: Picks, settings: TrainSettings,
                preprocess: PreprocessSettings, workdir: str | Path, gmm: dict[str, Any] | None = None,
                progress: Progress | None = None, should_stop: ShouldStop | None = None) -> TrainResult:
    """Train on ``prepared`` micrographs, tabulate thresholds, write the outputs into ``workdir``.

    With a hold-out, ``settings.refit`` and ``keep="last"``, a second run on every labelled
    micrograph follows the held-out one and is the network kept; the held-out run's history
    and threshold table describe it (same start, same schedule, more labels).
    ``gmm`` is the normalization's mixture (stored with the model). Under torchrun rank 0
    writes and every rank returns the same result once the model file exists.
    """
    workdir = Path(workdir)
    state = build_state(prepared, labels, settings, preprocess, workdir)
    refit = settings.refit and settings.keep == "last" and bool(state.data.holdout_names)
    phases = 2 if refit else 1
    history, best = fit(state, _phase(progress, 0, phases, ""), should_stop)
    kept_epoch = best.epoch if settings.keep == "best" else len(history)
    table, recommended = threshold_table(state)
    measured = state
    refit_history: list[dict[str, Any]] | None = None
    if refit:
        state, refit_history = _refit(prepared, labels, settings, preprocess, workdir,
                                      _phase(progress, 1, phases, "refit on all: "), should_stop)
    model = PickerModel(state.net.cpu().eval(), model_info(state, gmm, recommended, table, settings))
    model_path = workdir / MODEL_FILE
    if state.is_main:
        record = run_record(measured, best, kept_epoch, refit_history, state.data.train_names)
        model_path = write_outputs(workdir, model, history, table, recommended, record)
    barrier()  # every rank returns once the model file exists
    return TrainResult(model, model_path, history, table, recommended, state.data.pi, state.data.expected,
                       measured.data.holdout_names)


def _refit(prepared: Sequence[PreparedMicrograph], labels: Picks, settings: TrainSettings,
           preprocess: PreprocessSettings, workdir: Path, progress: Progress | None,
           should_stop: ShouldStop | None) -> tuple[TrainState, list[dict[str, Any]]]:
    """The same run again on every labelled micrograph (no hold-out), with its own checkpoint.

    On the ASPIRE bench the held-out micrograph is a third (medium, 3 labelled) or half
    (hard, 2 labelled) of the labels; training on it too is the kept network's gain.
    """
    state = build_state(prepared, labels, replace(settings, holdout_fraction=0.0), preprocess, workdir,
                        checkpoint_file=REFIT_CHECKPOINT_FILE)
    log.info("refit: training again on all %d labelled micrographs (the threshold table stays the "
             "held-out run's)", len(state.data.train_names))
    history, _ = fit(state, progress, should_stop)
    return state, history


def _phase(progress: Progress | None, index: int, phases: int, prefix: str) -> Progress | None:
    """``progress`` for phase ``index`` of ``phases`` equal runs: one bar over all of them."""
    if progress is None or phases == 1:
        return progress

    def report(done: int, total: int, message: str) -> None:
        progress(index * total + done, phases * total, prefix + message)

    return report
