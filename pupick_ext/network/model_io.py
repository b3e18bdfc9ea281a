"""Trained-model files: weights plus everything needed to use them again, loaded safely.

The file is a torch archive of plain tensors and one JSON string (``info``), read with
``torch.load(weights_only=True)``, which refuses pickled code: a planted pickle cannot run.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import ModelError
from ..io.fsio import atomic_path
from ..prep.normalize import GMMParams
from .models import ARCHITECTURES, PickerNet, build_model

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
        with atomic_path(path, verify=_reads_back) as tmp:
            torch.save(payload, tmp)
        return Path(path)


def _reads_back(tmp: Path) -> None:
    """A just-written model file loads (checked before it is renamed into place)."""
    payload = torch.load(tmp, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError("not a pupick model file")


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
    if info.get("normalization", "standard") not in ("gmm", "robust", "standard"):
        raise ValueError(f"unknown normalization {str(info.get('normalization'))[:20]!r}")
    if info.get("normalization") == "gmm" and info.get("gmm") is not None:
        gmm = GMMParams.from_dict(info["gmm"])
        values = (*gmm.mu, *gmm.sigma)
        if not values or not all(math.isfinite(v) for v in values) or min(gmm.sigma) <= 0:
            raise ValueError("normalization parameters are not finite positive numbers")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _looks_like_torch(path: Path) -> bool:
    """A torch zip archive (``PK``) or a legacy torch pickle (protocol byte ``0x80``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head.startswith(b"PK") or head[:1] == b"\x80"


def _check_weights(state: Any) -> None:
    """The state dict is a table of finite tensors (a diverged training saves NaN weights)."""
    if not isinstance(state, dict) or not state:
        raise ValueError("no weights")
    bad = []
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"weights entry {str(key)[:40]!r} is not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad.append(key)
    if bad:
        raise ModelError(f"its weights hold NaN or infinite values ({len(bad)} tensor(s), e.g. {bad[0]}): "
                         "the training that made it diverged; train again (e.g. with a lower learning rate)")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> PickerModel:
    """Load a model file without executing any code from it; ModelError (one line) if unusable.

    Whatever the file holds (random bytes, text, a damaged archive, a planted pickle, doctored
    metadata, weights of the wrong shape or NaN), the only exception is a :class:`ModelError`.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelError("is a directory, not a model file", path)
    if not path.is_file():
        raise ModelError("model file not found", path)
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise ModelError("corrupt or not a pupick model file (it asks for more memory than there is)",
                         path) from None
    except Exception as exc:  # noqa: BLE001 - the unpickler fails in many ways (IndexError, KeyError, struct.error ...)
        first = _first_line(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise ModelError("refused: the file contains pickled code, not a pupick model "
                             "(only weights and metadata are loaded)", path) from None
        if not _looks_like_torch(path):
            raise ModelError("corrupt or not a pupick model file (not a torch archive: a model file "
                             "is what 'pupick train' writes, model.pupick)", path) from None
        raise ModelError(f"corrupt or not a pupick model file ({first})", path) from None
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
        _check_weights(payload.get("state_dict"))
        net = build_model(info["architecture"], int(info["width"]), autoencoder=bool(info.get("autoencoder")))
        net.load_state_dict(payload["state_dict"])
    except ModelError as exc:
        raise ModelError(exc.problem, path) from None
    except MemoryError:
        raise ModelError("model file is inconsistent (the network it describes does not fit in memory)",
                         path) from None
    except Exception as exc:  # noqa: BLE001 - doctored metadata or weights: never a traceback
        text = getattr(exc, "problem", None) or str(exc)
        detail = text.splitlines()[0][:160] if text.strip() else type(exc).__name__
        raise ModelError(f"model file is incomplete or inconsistent ({detail})", path) from None
    net.eval()
    return PickerModel(net.to(device), info)
