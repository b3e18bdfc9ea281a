"""Trained-model files: weights plus everything needed to use them again, loaded safely.

The file is a torch archive of plain tensors and one JSON string (``info``), read with
``torch.load(weights_only=True)``, which refuses pickled code: a planted pickle cannot run.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import ModelError, PupickError
from .fsio import atomic_path
from .models import ARCHITECTURES, PickerNet, build_model
from .normalize import GMMParams

log = logging.getLogger(__name__)

FORMAT = "pupick-model"
FORMAT_VERSION = 1


@dataclass
class PickerModel:
    """A trained classifier and its metadata (architecture, scales, normalization, thresholds)."""

    net: PickerNet
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def receptive_field(self) -> int:
        return int(self.net.receptive_field)

    @property
    def gmm(self) -> GMMParams | None:
        data = self.info.get("gmm")
        return None if data is None else GMMParams.from_dict(data)

    @property
    def particle_radius_px(self) -> float:
        """Particle radius in working pixels."""
        return float(self.info["particle_diameter"]) / 2 / float(self.info["pixel_size"])

    def save(self, path: str | Path) -> Path:
        """Write the model file atomically."""
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "info": json.dumps({**self.info, "version": __version__}, sort_keys=True),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)


#: the widest network a model file may ask for (the architectures use 8-64; this bounds memory)
MAX_WIDTH = 1024


def _check_info(info: Any) -> None:
    """The metadata the engine relies on when picking, checked before anything is built from it."""
    if not isinstance(info, dict):
        raise ValueError("metadata is not a table")
    if info.get("architecture") not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {str(info.get('architecture'))[:40]!r}")
    width = info.get("width")
    if not isinstance(width, int) or isinstance(width, bool) or not 4 <= width <= MAX_WIDTH:
        raise ValueError(f"network width {str(width)[:20]!r} is not an integer in 4..{MAX_WIDTH}")
    for key, required in (("particle_diameter", True), ("pixel_size", True), ("downsample", False),
                          ("recommended_threshold", False)):
        value = info.get(key)
        if value is None and not required:
            continue
        signed = key == "recommended_threshold"
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or (
                not signed and value <= 0):
            raise ValueError(f"{key} {str(value)[:20]!r} is not a {'' if signed else 'positive '}number")
    if info.get("normalization", "standard") not in ("gmm", "standard"):
        raise ValueError(f"unknown normalization {str(info.get('normalization'))[:20]!r}")
    if info.get("normalization") == "gmm" and info.get("gmm") is not None:
        gmm = GMMParams.from_dict(info["gmm"])
        values = (*gmm.mu, *gmm.sigma)
        if not values or not all(math.isfinite(v) for v in values) or min(gmm.sigma) <= 0:
            raise ValueError("normalization parameters are not finite positive numbers")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> PickerModel:
    """Load a model file without executing any code from it; ModelError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("model file not found", path)
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ModelError("refused: the file contains pickled code, not a pupick model "
                             "(only weights and metadata are loaded)", path) from None
        raise ModelError(f"corrupt or not a pupick model file ({first[:160]})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError("not a pupick model file", path)
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelError(f"not a pupick model file (model format {str(version)[:20]!r})", path)
    if version > FORMAT_VERSION:
        raise ModelError(f"made by a newer pupick (model format {version}, this pupick reads up to "
                         f"{FORMAT_VERSION}); upgrade pupick", path)
    try:
        info = json.loads(payload["info"])
        _check_info(info)
        net = build_model(info["architecture"], int(info["width"]), autoencoder=bool(info.get("autoencoder")))
        net.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, PupickError) as exc:
        text = getattr(exc, "problem", None) or str(exc)
        detail = text.splitlines()[0][:160] if text.strip() else type(exc).__name__
        raise ModelError(f"model file is incomplete or inconsistent ({detail})", path) from None
    net.eval()
    return PickerModel(net.to(device), info)
