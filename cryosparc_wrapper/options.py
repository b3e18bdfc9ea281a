"""What the user asks for (mode and picking parameters), shared by live and offline mode."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pupick_ext import (
    ExtractSettings,
    PreprocessSettings,
    SettingsError,
    TrainSettings,
    parameter,
    parameters_for,
    settings_from,
)

Mode = Literal["train", "extract", "train+extract"]
MODES: tuple[str, ...] = ("train", "extract", "train+extract")
#: kept for scripts that imported it; the choices are the engine's (parameter table)
ARCHITECTURES: tuple[str, ...] = parameter("architecture").choices

#: parameter-table knob -> the PickOptions field that holds it (the rest go in ``parameters``)
FIELDS: dict[str, str] = {
    "particle_diameter": "diameter",
    "pixel_size": "pixel_size",
    "downsample": "downsample",
    "expected_particles": "expected_particles",
    "threshold": "threshold",
    "epochs": "epochs",
    "steps_per_epoch": "steps_per_epoch",
    "architecture": "model_arch",
    "device": "device",
    "threads": "num_threads",
    "seed": "seed",
}


def table_parameters() -> list[Any]:
    """Every parameter-table entry pupick-cryosparc offers (all that feed the engine's settings)."""
    return parameters_for(PreprocessSettings, TrainSettings, ExtractSettings)


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
        parameters: any other knob of the engine's parameter table, by canonical name
            (e.g. ``{"learning_rate": 3e-4, "symmetries": 8}``); missing ones keep their defaults.
    """

    mode: Mode = "train+extract"
    diameter: float | None = None
    model: Path | None = None
    pixel_size: float | None = None
    downsample: float | None = None
    expected_particles: float | None = None
    threshold: float | None = None
    epochs: int = parameter("epochs").default
    steps_per_epoch: int = parameter("steps_per_epoch").default
    model_arch: str = parameter("architecture").default
    device: str = parameter("device").default
    num_threads: int = parameter("threads").default
    flip_y: bool = False
    seed: int = parameter("seed").default
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for option, value in (("--diameter", self.diameter), ("--pixel-size", self.pixel_size),
                              ("--downsample", self.downsample),
                              ("--expected-particles", self.expected_particles),
                              ("--threshold", self.threshold)):
            if value is not None and not math.isfinite(float(value)):
                raise SettingsError(f"{option} {value} is not a finite number")
        if self.mode not in MODES:
            raise SettingsError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.model is not None:
            object.__setattr__(self, "model", Path(self.model))
        offered = {p.name for p in table_parameters()} - set(FIELDS)  # FIELDS knobs are set as fields
        unknown = sorted(set(self.parameters) - offered)
        if unknown:
            raise SettingsError(f"parameters {', '.join(unknown)}: not in the parameter table, "
                                "or set as fields")
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

    def values(self) -> dict[str, Any]:
        """Every knob set here, by canonical parameter-table name."""
        return {**self.parameters, **{name: getattr(self, attr) for name, attr in FIELDS.items()}}

    def preprocess(self) -> PreprocessSettings:
        return settings_from(PreprocessSettings, self.values())

    def train_settings(self) -> TrainSettings:
        assert self.diameter is not None
        return settings_from(TrainSettings, self.values())

    def extract_settings(self) -> ExtractSettings:
        return settings_from(ExtractSettings, self.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = None if self.model is None else str(self.model)
        out["parameters"] = dict(self.parameters)
        return out
