"""What the user asks for (mode and picking parameters), shared by live and offline mode."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pupick_ext import ExtractSettings, PreprocessSettings, SettingsError, TrainSettings

Mode = Literal["train", "extract", "train+extract"]
MODES: tuple[str, ...] = ("train", "extract", "train+extract")
ARCHITECTURES: tuple[str, ...] = ("resnet8", "resnet16", "conv31", "conv63", "conv127")

_TRAIN_DEFAULTS = TrainSettings(particle_diameter=100.0)


@dataclass(frozen=True)
class PickOptions:
    """Picking parameters; defaults are the engine's.

    Args:
        mode: ``train``, ``extract`` or ``train+extract``.
        diameter: particle diameter in Angstrom (needed to train).
        model: a trained model file (needed for ``extract``).
        pixel_size: working pixel size (A/px) for training; or ``downsample``, not both.
        expected_particles: expected particles per micrograph (default: estimated from labels).
        threshold: score threshold (log-likelihood ratio); None uses the model's recommendation.
        flip_y: store ``1 - y/ny`` in ``center_y_frac`` (and read labels the same way).
    """

    mode: Mode = "train+extract"
    diameter: float | None = None
    model: Path | None = None
    pixel_size: float | None = None
    downsample: float | None = None
    expected_particles: float | None = None
    threshold: float | None = None
    epochs: int = _TRAIN_DEFAULTS.epochs
    steps_per_epoch: int = _TRAIN_DEFAULTS.steps_per_epoch
    model_arch: str = _TRAIN_DEFAULTS.model
    device: str = "auto"
    num_threads: int = 0
    flip_y: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for option, value in (("--diameter", self.diameter), ("--pixel-size", self.pixel_size),
                              ("--downsample", self.downsample), ("--expected-particles", self.expected_particles),
                              ("--threshold", self.threshold)):
            if value is not None and not math.isfinite(float(value)):
                raise SettingsError(f"{option} {value} is not a finite number")
        if self.mode not in MODES:
            raise SettingsError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.model is not None:
            object.__setattr__(self, "model", Path(self.model))
        if self.mode == "extract" and self.model is None:
            raise SettingsError("--mode extract needs --model (a model file written by a training run)")
        if self.trains and self.diameter is None:
            raise SettingsError("training needs the particle diameter: give --diameter (Angstrom)")
        if self.trains and self.model is not None:
            raise SettingsError(f"--model is only used with --mode extract, not {self.mode}")
        # Build the settings once so every range check happens before anything is contacted.
        self.preprocess()
        self.extract_settings()
        if self.trains:
            self.train_settings()

    @property
    def trains(self) -> bool:
        return self.mode in ("train", "train+extract")

    @property
    def extracts(self) -> bool:
        return self.mode in ("extract", "train+extract")

    def preprocess(self) -> PreprocessSettings:
        return PreprocessSettings(pixel_size=self.pixel_size, downsample=self.downsample, seed=self.seed)

    def train_settings(self) -> TrainSettings:
        assert self.diameter is not None
        return TrainSettings(
            particle_diameter=self.diameter,
            model=self.model_arch,  # type: ignore[arg-type]
            expected_particles=self.expected_particles,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            seed=self.seed,
            device=self.device,
            num_threads=self.num_threads,
        )

    def extract_settings(self) -> ExtractSettings:
        return ExtractSettings(threshold=self.threshold, device=self.device)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = None if self.model is None else str(self.model)
        return out
