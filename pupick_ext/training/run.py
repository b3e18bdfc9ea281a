"""The one entry of training: prepared micrographs and labels in, a trained model and its files out."""

from __future__ import annotations

from collections.abc import Sequence
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
from .state import build_state
from .validate import threshold_table


def train_model(prepared: Sequence[PreparedMicrograph], labels: Picks, settings: TrainSettings,
                preprocess: PreprocessSettings, workdir: str | Path, gmm: dict[str, Any] | None = None,
                progress: Progress | None = None, should_stop: ShouldStop | None = None) -> TrainResult:
    """Train on ``prepared`` micrographs, tabulate thresholds, write the outputs into ``workdir``.

    ``gmm`` is the normalization's mixture (stored with the model). Under torchrun rank 0
    writes and every rank returns the same result once the model file exists.
    """
    workdir = Path(workdir)
    state = build_state(prepared, labels, settings, preprocess, workdir)
    history, best = fit(state, progress, should_stop)
    kept_epoch = best.epoch if settings.keep == "best" else len(history)
    table, recommended = threshold_table(state)
    model = PickerModel(state.net.cpu().eval(), model_info(state, gmm, recommended, table))
    model_path = workdir / MODEL_FILE
    if state.is_main:
        record = run_record(state, best, kept_epoch)
        model_path = write_outputs(workdir, model, history, table, recommended, record)
    barrier()  # every rank returns once the model file exists
    return TrainResult(model, model_path, history, table, recommended, state.data.pi, state.data.expected,
                       state.data.holdout_names)
