"""The External job's user parameters, checked, and the engine settings built from them.

RELION hands every parameter over as text (``--<label> <value>``, the value possibly
empty), so conversion happens here, with messages that name the parameter label the
user typed in the GUI.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from typing import Any

from pupick_ext import ExtractSettings, PreprocessSettings, SettingsError, TrainSettings

from .choices import DEFAULT_SUFFIX, DEVICES, MODES

_TRUE = {"yes", "y", "true", "1", "on"}
_FALSE = {"no", "n", "false", "0", "off"}


@dataclass(frozen=True)
class JobParams:
    """Everything the user can set on the External job, in plain Python types."""

    mode: str = "train+extract"
    diameter: float | None = None
    pixel_size: float | None = None
    downsample: float | None = None
    expected_particles: float | None = None
    threshold: float | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    minibatch_size: int | None = None
    model_arch: str | None = None
    objective: str | None = None
    normalization: str | None = None
    model: str | None = None
    max_picks: int | None = None
    device: str = "auto"
    gpu: str | None = None
    threads: int = 1
    seed: int = 0
    suffix: str = DEFAULT_SUFFIX
    relion_version: str | None = None
    pictures: int = 3
    debug: bool = False

    @property
    def trains(self) -> bool:
        """Whether this mode trains a model."""
        return self.mode in ("train", "train+extract")

    @property
    def extracts(self) -> bool:
        """Whether this mode picks particles."""
        return self.mode in ("extract", "train+extract")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the run record."""
        return asdict(self)


@dataclass(frozen=True)
class Settings:
    """The engine settings for one run (``train`` is None when the job does not train)."""

    preprocess: PreprocessSettings
    train: TrainSettings | None
    extract: ExtractSettings


def _blank(value: str | None) -> bool:
    return value is None or str(value).strip() == ""


def _number(
    name: str, value: str | None, kind: type = float, minimum: float | None = None, strictly: bool = True
) -> Any:
    if _blank(value):
        return None
    text = str(value).strip()
    try:
        number = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
    except ValueError:
        raise SettingsError(
            f"parameter '{name}': {text!r} is not a{'n integer' if kind is int else ' number'}"
        ) from None
    if kind is float and not math.isfinite(number):
        raise SettingsError(f"parameter '{name}': {text} is not a finite number")
    if minimum is not None and (number <= minimum if strictly else number < minimum):
        relation = ">" if strictly else ">="
        raise SettingsError(f"parameter '{name}': {text} must be {relation} {minimum:g}")
    return number


def _choice(name: str, value: str | None, choices: tuple[str, ...], default: str | None) -> str | None:
    if _blank(value):
        return default
    text = str(value).strip().lower()
    if text not in choices:
        raise SettingsError(f"parameter '{name}': {value!r} is not one of {', '.join(choices)}")
    return text


def parse_bool(name: str, value: str | None, default: bool = False) -> bool:
    """RELION-style booleans: Yes/No, true/false, 1/0; a flag given without a value means yes."""
    if value is None:
        return default
    text = str(value).strip().lower()
    if text == "" or text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"parameter '{name}': {value!r} is not yes or no")


def params_from_args(args: argparse.Namespace) -> JobParams:
    """Convert the parsed command line (strings) into checked :class:`JobParams`."""
    mode = _choice("mode", args.mode, MODES, "train+extract")
    assert mode is not None
    suffix = "" if _blank(args.suffix) else str(args.suffix).strip()
    suffix = suffix or DEFAULT_SUFFIX
    if any(c in suffix for c in "/ \t") or suffix.startswith("."):
        raise SettingsError(f"parameter 'suffix': {suffix!r} cannot contain '/' or blanks")
    params = JobParams(
        mode=mode,
        diameter=_number("diameter", args.diameter, float, 0),
        pixel_size=_number("pixel_size", args.pixel_size, float, 0),
        downsample=_number("downsample", args.downsample, float, 1, strictly=False),
        expected_particles=_number("expected_particles", args.expected_particles, float, 0),
        threshold=_number("threshold", args.threshold, float),
        epochs=_number("epochs", args.epochs, int, 1, strictly=False),
        steps_per_epoch=_number("steps_per_epoch", args.steps_per_epoch, int, 1, strictly=False),
        minibatch_size=_number("minibatch_size", args.minibatch_size, int, 2, strictly=False),
        model_arch=None if _blank(args.model_arch) else str(args.model_arch).strip().lower(),
        objective=None if _blank(args.objective) else str(args.objective).strip().lower(),
        normalization=None if _blank(args.normalization) else str(args.normalization).strip().lower(),
        model=None if _blank(args.model) else str(args.model).strip(),
        max_picks=_number("max_picks", args.max_picks, int, 1, strictly=False),
        device=_choice("device", args.device, DEVICES, "auto") or "auto",
        gpu=None if _blank(args.gpu) else str(args.gpu).strip(),
        threads=_number("j", args.j, int, 1, strictly=False) or 1,
        seed=_number("seed", args.seed, int) or 0,
        suffix=suffix,
        relion_version=None if _blank(args.relion_version) else str(args.relion_version).strip(),
        pictures=_number("pictures", args.pictures, int, 0, strictly=False)
        if not _blank(args.pictures)
        else 3,
        debug=parse_bool("debug", args.debug),
    )
    if params.pixel_size is not None and params.downsample is not None:
        raise SettingsError("give parameter 'pixel_size' or 'downsample', not both")
    if params.trains and params.diameter is None:
        raise SettingsError(
            "parameter 'diameter' (particle diameter in A) is required for training: "
            "add a parameter with label diameter"
        )
    if params.mode == "extract" and params.model is None:
        raise SettingsError("parameter 'model' (a trained pupick model file) is required with mode extract")
    return params


def device_name(params: JobParams) -> str:
    """The torch device string: 'cpu', 'auto', 'cuda' or 'cuda:<gpu>'."""
    if params.gpu is None or params.device == "cpu":
        return params.device
    first = params.gpu.replace(":", ",").split(",")[0].strip()
    if not first.isdigit():
        raise SettingsError(f"parameter 'gpu': {params.gpu!r} is not a GPU number")
    return f"cuda:{first}"


def build_settings(params: JobParams) -> Settings:
    """Engine settings for ``params`` (engine defaults for everything the user left blank)."""
    device = device_name(params)
    preprocess_kwargs: dict[str, Any] = {
        "pixel_size": params.pixel_size,
        "downsample": params.downsample,
        "seed": params.seed,
    }
    if params.normalization:
        preprocess_kwargs["normalization"] = params.normalization
    preprocess = PreprocessSettings(**preprocess_kwargs)
    train = None
    if params.trains:
        assert params.diameter is not None
        optional: dict[str, Any] = {
            "model": params.model_arch,
            "objective": params.objective,
            "epochs": params.epochs,
            "steps_per_epoch": params.steps_per_epoch,
            "minibatch_size": params.minibatch_size,
        }
        train = TrainSettings(
            particle_diameter=params.diameter,
            expected_particles=params.expected_particles,
            seed=params.seed,
            device=device,
            num_threads=params.threads,
            **{k: v for k, v in optional.items() if v is not None},
        )
    extract = ExtractSettings(threshold=params.threshold, max_picks=params.max_picks, device=device)
    return Settings(preprocess, train, extract)
