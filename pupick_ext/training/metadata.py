"""What is recorded about a training: the model file's metadata and ``train_settings.json``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..settings import TrainSettings
from .checkpoint import Best
from .state import TrainState
from .thresholds import ThresholdRow


def model_info(state: TrainState, gmm: dict[str, Any] | None, recommended: float,
               table: Sequence[ThresholdRow], settings: TrainSettings | None = None) -> dict[str, Any]:
    """The model file's metadata: architecture, working scale, normalization, pi and threshold help.

    ``settings`` are the ones asked for when ``state`` ran with others (a refit has no hold-out).
    """
    first = next(iter(state.data.by_name.values()))
    return {
        "architecture": state.settings.model,
        "width": state.settings.width,
        "autoencoder": state.gamma > 0,
        "receptive_field": int(state.net.receptive_field),
        "pixel_size": first.working_pixel_size,
        "downsample": float(first.scale[0]),
        "particle_diameter": state.settings.particle_diameter,
        "normalization": state.preprocess.normalization,
        "gmm": gmm,
        "pi": state.data.pi,
        "expected_particles": state.data.expected,
        "recommended_threshold": recommended,
        "threshold_table": table,
        "train_settings": (settings or state.settings).to_dict(),
        "preprocess_settings": state.preprocess.to_dict(),
        "trained_with": __version__,
        "init": state.init,
    }


def run_record(state: TrainState, best: Best, kept_epoch: int,
               refit_history: Sequence[dict[str, Any]] | None = None,
               model_micrographs: Sequence[str] | None = None) -> dict[str, Any]:
    """What ``train_settings.json`` holds: version, command, settings, data split, best and kept epoch,
    and the device and arithmetic ("bf16" or "fp32") the steps ran in.

    ``state`` is the held-out run; with a refit, ``refit_history`` is its per-epoch loss and
    ``model_micrographs`` the micrographs the kept network trained on.
    """
    return {
        "version": __version__,
        "command": sys.argv,
        "train": state.settings.to_dict(),
        "preprocess": state.preprocess.to_dict(),
        "pi": state.data.pi,
        "expected_particles": state.data.expected,
        "train_micrographs": state.data.train_names,
        "holdout_micrographs": state.data.holdout_names,
        "best_epoch": best.epoch,
        "kept_epoch": kept_epoch,
        "arithmetic": "bf16" if state.bf16 else "fp32",
        "device": str(state.device),
        "refit": refit_history is not None,
        "refit_history": list(refit_history or []),
        "model_micrographs": list(model_micrographs if model_micrographs is not None
                                  else state.data.train_names),
    }
