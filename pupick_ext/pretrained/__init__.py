"""Pretrained starting weights shipped with pupick (``general``), and where to find them.

``general`` is a ResNet8 (width 32) trained by :mod:`pupick_ext.pretrained.build` on fully
labelled synthetic micrographs of many different particles, doses and clutter, at the
working scale every micrograph is brought to (particle radius about 12 pixels). Training
on a user's labels starts from it, as a person who has seen many particles before learns
a new one from a few examples: the network already knows noise, carbon, ice and a
particle-sized object, and only has to learn this particle.
"""

from __future__ import annotations

from pathlib import Path

#: the names ``TrainSettings.init`` accepts besides a model file path
PRETRAINED: dict[str, str] = {"general": "general_resnet8_w32.pupick"}
#: the (architecture, width) of the shipped ``general`` model
GENERAL_ARCHITECTURE = ("resnet8", 32)


def pretrained_path(name: str) -> Path | None:
    """The shipped file of pretrained model ``name``, or None if ``name`` is not one of PRETRAINED."""
    file = PRETRAINED.get(name)
    return None if file is None else Path(__file__).with_name(file)
