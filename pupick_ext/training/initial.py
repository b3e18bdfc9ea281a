"""The weights training starts from: random, the shipped ``general`` model, or a model file."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ..errors import InputError

log = logging.getLogger(__name__)


def resolve_init(init: str | None, architecture: str, width: int) -> str | None:
    """What training starts from: "auto" is the shipped ``general`` model when it fits, else random."""
    if init is None or init.strip().lower() in ("", "none", "random"):
        return None
    if init != "auto":
        return init
    from ..pretrained import GENERAL_ARCHITECTURE, pretrained_path

    path = pretrained_path("general")
    if (architecture, width) == GENERAL_ARCHITECTURE and path is not None and path.exists():
        return "general"
    return None


def load_initial_weights(net: nn.Module, init: str) -> None:
    """Start ``net`` from a pretrained model: a shipped name (``general``) or a model file.

    The architecture and width must match; a decoder (autoencoder) is never taken over,
    since it is trained afresh when asked for.
    """
    from ..network.model_io import load_model
    from ..pretrained import PRETRAINED, pretrained_path

    path = pretrained_path(init) or Path(init)
    if init in PRETRAINED and not path.exists():
        raise InputError(f"the shipped starting model {init!r} is missing from this installation", path)
    start = load_model(path)
    arch, width = start.info.get("architecture"), start.info.get("width")
    if (arch, width) != (net.name, net.width):
        raise InputError(f"starting model is {arch} width {width}, but training asks for {net.name} width "
                         f"{net.width}; choose the same --model and --width or another --init", path)
    weights = {k: v for k, v in start.net.state_dict().items() if not k.startswith("decoder.")}
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if unexpected or any(not k.startswith("decoder.") for k in missing):
        raise InputError("starting model's weights do not fit the network", path)
    log.info("starting from %s (%s)", init, path)
