"""The External job's user parameters, checked, and the engine settings built from them.

RELION hands every parameter over as text (``--<label> <value>``, the value possibly
empty), so conversion happens here, with messages that name the parameter label the
user typed in the GUI.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pupick_ext import (
    ExtractSettings,
    Parameter,
    PreprocessSettings,
    SettingsError,
    TrainSettings,
    parameter,
    parameters_for,
    settings_from,
)

from .choices import DEFAULT_SUFFIX, DEVICES, MODES

_TRUE = {"yes", "y", "true", "1", "on"}
_FALSE = {"no", "n", "false", "0", "off"}

#: Table knobs RELION sets through its own fields: its 'Number of threads' (--j) and device + gpu.
_RELION_OWN = ("threads", "device")
#: JobParams' attribute names from before the parameter table, where they differ from the canonical name.
_OLD_NAMES = {"particle_diameter": "diameter", "architecture": "model_arch"}


def relion_parameters() -> list[Parameter]:
    """The parameter-table entries the External job takes as ``--<label> <value>`` (label: the canonical
    name; old spellings such as ``diameter`` and ``model_arch`` still work)."""
    everything = parameters_for(PreprocessSettings, TrainSettings, ExtractSettings)
    return [p for p in everything if p.name not in _RELION_OWN]


@dataclass(frozen=True)
class JobParams:
    """Everything the user can set on the External job, in plain Python types.

    ``values`` holds the parameter-table knobs the user gave, by canonical name (None or
    missing: the engine default); they read as attributes too, under the canonical name or
    the name they had before the table (``params.diameter``, ``params.model_arch``).
    """

    mode: str = "train+extract"
    model: str | None = None
    device: str = "auto"
    gpu: str | None = None
    threads: int = 0
    suffix: str = DEFAULT_SUFFIX
    relion_version: str | None = None
    pictures: int = 3
    debug: bool = False
    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        canonical = {old: new for new, old in _OLD_NAMES.items()}.get(name, name)
        if name.startswith("_") or canonical not in {p.name for p in relion_parameters()}:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.values.get(canonical)

    @property
    def trains(self) -> bool:
        """Whether this mode trains a model."""
        return self.mode in ("train", "train+extract")

    @property
    def extracts(self) -> bool:
        """Whether this mode picks particles."""
        return self.mode in ("extract", "train+extract")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the run record (one key per parameter, as before the table)."""
        out = asdict(self)
        del out["values"]
        out.update({_OLD_NAMES.get(p.name, p.name): self.values.get(p.name) for p in relion_parameters()})
        return out


@dataclass(frozen=True)
class Settings:
    """The engine settings for one run (``train`` is None when the job does not train)."""

    preprocess: PreprocessSettings
    train: TrainSettings | None
    extract: ExtractSettings


def _blank(value: str | None) -> bool:
    return value is None or str(value).strip() == ""


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


def _table_values(args: argparse.Namespace) -> dict[str, Any]:
    """Each table knob the command line gives (under any of its labels), checked by the table."""
    values: dict[str, Any] = {}
    for p in relion_parameters():
        for label in p.spellings("relion"):
            value = p.parse(getattr(args, label, None), label)
            if value is not None:
                values[p.name] = value
    return values


def _integer(label: str, text: str | None, minimum: int) -> int | None:
    """A RELION-side integer (--j, pictures), with the table's wording for bad values."""
    number = Parameter(label, "", (), kind=int, low=minimum).parse(text, label)
    return None if number is None else int(number)


def params_from_args(args: argparse.Namespace) -> JobParams:
    """Convert the parsed command line (strings) into checked :class:`JobParams`."""
    mode = _choice("mode", args.mode, MODES, "train+extract")
    assert mode is not None
    suffix = "" if _blank(args.suffix) else str(args.suffix).strip()
    suffix = suffix or DEFAULT_SUFFIX
    if any(c in suffix for c in "/ \t") or suffix.startswith("."):
        raise SettingsError(f"parameter 'suffix': {suffix!r} cannot contain '/' or blanks")
    threads = _integer("j", args.j, 1)
    pictures = _integer("pictures", args.pictures, 0)
    params = JobParams(
        mode=mode,
        model=None if _blank(args.model) else str(args.model).strip(),
        device=_choice("device", args.device, DEVICES, "auto") or "auto",
        gpu=None if _blank(args.gpu) else str(args.gpu).strip(),
        threads=parameter("threads").default if threads is None else threads,
        suffix=suffix,
        relion_version=None if _blank(args.relion_version) else str(args.relion_version).strip(),
        pictures=3 if pictures is None else pictures,
        debug=parse_bool("debug", args.debug),
        values=_table_values(args),
    )
    if params.pixel_size is not None and params.downsample is not None:
        raise SettingsError("give parameter 'pixel_size' or 'downsample', not both")
    if params.trains and params.diameter is None:
        raise SettingsError(
            "parameter 'particle_diameter' (particle diameter in A) is required for training: "
            "add a parameter with label particle_diameter (or diameter)"
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
    preprocess = settings_from(PreprocessSettings, params.values)
    train = None
    if params.trains:
        train = settings_from(TrainSettings, params.values, device=device, num_threads=params.threads)
    extract = settings_from(ExtractSettings, params.values, device=device)
    return Settings(preprocess, train, extract)
