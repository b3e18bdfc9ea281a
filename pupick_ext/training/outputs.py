"""What training hands back (:class:`TrainResult`) and the files it leaves in the work directory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io.fsio import write_atomic
from ..network.model_io import PickerModel
from .thresholds import ThresholdRow, write_threshold_table

log = logging.getLogger(__name__)

#: the trained model's file name in the work directory
MODEL_FILE = "model.pupick"
#: per-epoch loss, seconds and held-out metrics
HISTORY_FILE = "training_history.json"
#: the settings, data split and best epoch of the run
RECORD_FILE = "train_settings.json"


@dataclass
class TrainResult:
    """What training produced: the model, its file, per-epoch history and threshold help."""

    model: PickerModel
    model_path: Path
    history: list[dict[str, Any]]
    threshold_table: list[tuple[float, float, float]]
    recommended_threshold: float
    pi: float
    expected_particles: float
    holdout: list[str] = field(default_factory=list)


def write_outputs(workdir: Path, model: PickerModel, history: list[dict[str, Any]], table: list[ThresholdRow],
                  recommended: float, record: dict[str, Any]) -> Path:
    """Write the model file, the history, the threshold table and the run record; the model's path."""
    model_path = model.save(workdir / MODEL_FILE)
    write_atomic(workdir / HISTORY_FILE, json.dumps(history, indent=1))
    write_threshold_table(workdir, table, recommended)
    write_atomic(workdir / RECORD_FILE, json.dumps(record, indent=1, default=str))
    log.info("model written to %s (recommended threshold %.1f)", model_path, recommended)
    return model_path
