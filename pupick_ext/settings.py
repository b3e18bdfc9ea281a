"""Settings that travel together, as frozen dataclasses validated on construction.

Built from CLI options, a RELION job's parameters or a cryoSPARC script's arguments;
the engine never parses a host's command line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import SettingsError

#: progress callback: (done, total, message); hosts turn it into a bar or log lines
Progress = Callable[[int, int, str], None]
#: polled between micrographs / steps; True makes the engine raise AbortRequested
ShouldStop = Callable[[], bool]

Normalization = Literal["gmm", "robust", "standard"]
NORMALIZATIONS: tuple[str, ...] = ("gmm", "robust", "standard")
Objective = Literal["ge-binomial", "ge-kl", "pn", "nnpu"]
HoldoutBy = Literal["auto", "micrograph", "region"]
LRSchedule = Literal["constant", "cosine"]
#: which epoch's weights the model file holds: the final one, or the best by held-out AP
KeepEpoch = Literal["last", "best"]
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
Architecture = Literal["resnet8", "resnet16", "conv31", "conv63", "conv127"]

OBJECTIVES: tuple[str, ...] = ("ge-binomial", "ge-kl", "pn", "nnpu")
ARCHITECTURES: tuple[str, ...] = ("resnet8", "resnet16", "conv31", "conv63", "conv127")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
HOLDOUT_KINDS: tuple[str, ...] = ("auto", "micrograph", "region")
KEEP_EPOCHS: tuple[str, ...] = ("last", "best")
#: How many turns/mirrors of a micrograph its score map can be averaged over.
SYMMETRIES: tuple[int, ...] = (1, 2, 4, 8)
#: Particle radius, in working pixels, that the default downsampling aims for.
TARGET_RADIUS_PX = 12.0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SettingsError(message)


def _require_finite(obj: Any) -> None:
    """Every number of a settings object is finite (nan passes every comparison check, inf most)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{f.name.replace('_', ' ')} must be a finite number, got {value}")


def _to_dict(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


@dataclass(frozen=True)
class MicrographEntry:
    """One micrograph: where it is, the stable name that ties coordinates to it, its pixel size.

    ``name`` defaults to the file's stem; ``pixel_size`` (A/px) defaults to the MRC header's.
    """

    path: Path
    name: str = ""
    pixel_size: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not self.name:
            object.__setattr__(self, "name", micrograph_stem(self.path))
        _require(self.pixel_size is None or (math.isfinite(self.pixel_size) and self.pixel_size > 0),
                 f"{self.path}: pixel size must be a positive finite number")


def micrograph_stem(path: str | Path) -> str:
    """The name used to match coordinates to a micrograph: the file name without .mrc/.mrcs/.tif."""
    name = Path(str(path)).name
    for ext in (".mrcs", ".mrc", ".tiff", ".tif", ".star", ".txt", ".box", ".cs"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


@dataclass(frozen=True)
class PreprocessSettings:
    """How micrographs become network input: downsampling and normalization.

    Give ``pixel_size`` (working A/px) or ``downsample`` (factor >= 1), not both; with neither,
    the factor is chosen so that the particle radius is about 12 working pixels.
    """

    pixel_size: float | None = None
    downsample: float | None = None
    normalization: Normalization = "robust"
    seed: int = 0
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        _require_finite(self)
        _require(self.pixel_size is None or self.downsample is None,
                 "give a working pixel size or a downsampling factor, not both")
        _require(self.pixel_size is None or self.pixel_size > 0, "working pixel size must be positive")
        _require(self.downsample is None or self.downsample >= 1, "downsampling factor must be >= 1")
        _require(self.normalization in NORMALIZATIONS, f"unknown normalization {self.normalization!r}; "
                 f"choose from {', '.join(NORMALIZATIONS)}")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    def factor_for(self, original_pixel_size: float, particle_diameter: float | None = None) -> float:
        """Downsampling factor for a micrograph of ``original_pixel_size`` A/px."""
        if self.downsample is not None:
            return float(self.downsample)
        if self.pixel_size is not None:
            return max(1.0, self.pixel_size / original_pixel_size)
        if particle_diameter is None:
            return 1.0
        radius_px = particle_diameter / 2 / original_pixel_size
        return max(1.0, radius_px / TARGET_RADIUS_PX)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes training. Only ``particle_diameter`` (A) has no default.

    ``expected_particles`` (per micrograph) sets pi, the positive fraction of unlabeled
    pixels; when None it is estimated from the labels (see ``training.suggest_pi``).
    ``autoencoder`` is gamma; None means 10/N for N <= 250 labelled particles, else 0.
    A step draws ``minibatch_size`` patches of ``patch_size`` x ``patch_size`` classifier
    outputs; ``positive_fraction`` of them are centred on labelled particles.
    ``refit`` (with ``keep="last"`` and a hold-out): once the held-out run has measured the
    thresholds, train again from the same start on every labelled micrograph and keep that
    network, so no label is spent only on measuring (twice the training time).
    ``anchor``: weight of the squared distance of the weights from the start model's (L2-SP;
    0 = off; no effect without a start model).
    ``precision``: "auto" trains the convolutions in bf16 on a GPU and on a CPU with native
    bf16 (AVX512-BF16/AMX), fp32 elsewhere; "fp32" and "bf16" force one.
    """

    particle_diameter: float
    model: Architecture = "resnet8"
    width: int = 32
    objective: Objective = "ge-binomial"
    expected_particles: float | None = None
    training_radius: int = 3
    epochs: int = 10
    steps_per_epoch: int = 100
    minibatch_size: int = 32
    patch_size: int = 16
    positive_fraction: float = 0.25
    learning_rate: float = 1e-3
    lr_schedule: LRSchedule = "cosine"
    augment: bool = True
    ge_weight: float = 1.0
    autoencoder: float | None = None
    holdout_fraction: float = 0.2
    holdout_by: HoldoutBy = "auto"
    init: str | None = "auto"
    patience: int = 4
    keep: KeepEpoch = "last"
    refit: bool = False
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    precision: Precision = "auto"
    anchor: float = 0.0

    def __post_init__(self) -> None:
        _require_finite(self)
        _require(self.particle_diameter > 0, "particle diameter (A) must be positive")
        _require(self.model in ARCHITECTURES,
                 f"unknown model {self.model!r}; choose from {', '.join(ARCHITECTURES)}")
        _require(self.objective in OBJECTIVES,
                 f"unknown objective {self.objective!r}; choose from {', '.join(OBJECTIVES)}")
        _require(self.width >= 4, "model width must be >= 4")
        _require(self.expected_particles is None or self.expected_particles > 0,
                 "expected particles must be positive")
        _require(self.training_radius >= 0, "training radius must be >= 0")
        _require(self.epochs >= 1 and self.steps_per_epoch >= 1, "epochs and steps per epoch must be >= 1")
        _require(self.minibatch_size >= 2, "minibatch size (patches per step) must be >= 2")
        _require(self.patch_size >= 1, "patch size (outputs per side) must be >= 1")
        _require(0 < self.positive_fraction < 1, "positive fraction must lie in (0, 1)")
        _require(self.learning_rate > 0, "learning rate must be positive")
        _require(self.autoencoder is None or self.autoencoder >= 0, "autoencoder weight must be >= 0")
        _require(0 <= self.holdout_fraction < 1, "hold-out fraction must lie in [0, 1)")
        _require(self.lr_schedule in LR_SCHEDULES,
                 f"unknown learning-rate schedule {self.lr_schedule!r}; choose from constant, cosine")
        _require(self.keep in KEEP_EPOCHS,
                 f"unknown epoch to keep {self.keep!r}; choose from {', '.join(KEEP_EPOCHS)}")
        _require(self.anchor >= 0, "anchor weight must be >= 0")
        _require(self.precision in PRECISIONS,
                 f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        _require(self.holdout_by in HOLDOUT_KINDS,
                 f"unknown hold-out kind {self.holdout_by!r}; choose from auto, micrograph, region")

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass(frozen=True)
class ExtractSettings:
    """How score maps become picks.

    ``threshold`` is on the log-likelihood-ratio (logit) scale: 0 means even odds, -3 keeps
    picks the model thinks ~5% likely; None uses the threshold recommended at training.
    ``radius`` (working px) is the NMS radius, default the particle radius; picks closer
    than ``edge_margin`` working px to the border are dropped (default 0: particles cut by the
    border are picked, as the held-out table that sets the threshold counts them).
    """

    threshold: float | None = None
    radius: int | None = None
    edge_margin: int = 0
    max_picks: int | None = None
    batch_size: int = 4
    tile_size: int = 2048
    device: str = "auto"
    num_workers: int = 0
    symmetries: int = 4

    def __post_init__(self) -> None:
        _require_finite(self)
        _require(self.symmetries in SYMMETRIES,
                 "symmetries (score averaging over turns) must be 1, 2, 4 or 8")
        _require(self.radius is None or self.radius >= 1, "NMS radius must be >= 1 pixel")
        _require(self.edge_margin >= 0, "edge margin must be >= 0")
        _require(self.max_picks is None or self.max_picks >= 1, "max picks must be >= 1")
        _require(self.batch_size >= 1, "batch size must be >= 1")
        _require(self.tile_size >= 64, "tile size must be >= 64")

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)
