"""The parameter table: one entry per engine knob a user can set, read by every front end.

``pupick`` and ``pupick-cryosparc`` render these entries as click options
(:func:`pupick_ext.click_render.click_option`), ``pupick-relion`` as RELION parameter
labels (``--<label> <value>``, converted by :meth:`Parameter.parse`). An entry holds the
canonical name, the settings field(s) it feeds, help, type, bounds, choices and old
spellings; defaults and choices are *read* from the settings dataclasses and their
validation constants (settings.py), never typed twice.

Adding a training setting therefore touches two places: the field in ``TrainSettings``
and one entry in :data:`PARAMETERS` (tests/unit/test_settings.py checks that every
settings field has one).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import settings as _s
from .errors import SettingsError
from .settings import ExtractSettings, PreprocessSettings, TrainSettings

S = TypeVar("S")

#: the front ends, as :meth:`Parameter.spellings` names them
HOSTS: tuple[str, ...] = ("pupick", "relion", "cryosparc")


@dataclass(frozen=True)
class Parameter:
    """One knob: ``name`` is its canonical spelling (``--learning-rate`` / label ``learning_rate``).

    ``targets`` are the (settings class, field) pairs it feeds, the first one giving the
    default. ``aliases`` are old spellings every front end accepts; ``host_aliases`` those
    only one front end accepts (pupick train's ``--model`` is the architecture, elsewhere
    ``model`` is a model file). ``none_words`` are values that mean None (``--init none``).
    """

    name: str
    help: str
    targets: tuple[tuple[type, str], ...]
    kind: type = float
    choices: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    aliases: tuple[str, ...] = ()
    host_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    short: str = ""
    none_words: tuple[str, ...] = ()

    @property
    def default(self) -> Any:
        """The settings dataclass's default (None where the field has none)."""
        cls, name = self.targets[0]
        found = {f.name: f for f in dataclasses.fields(cls)}[name]
        return None if found.default is dataclasses.MISSING else found.default

    @property
    def flag(self) -> str:
        """The canonical command-line flag, e.g. ``--learning-rate``."""
        return _flag(self.name)

    def spellings(self, host: str) -> tuple[str, ...]:
        """The canonical name, then the old spellings ``host`` (one of :data:`HOSTS`) accepts."""
        return (self.name, *self.aliases, *self.host_aliases.get(host, ()))

    def flags(self, host: str) -> list[str]:
        """Every ``--flag`` (and pupick's one-letter flag) ``host`` accepts for this knob."""
        flags = [_flag(s) for s in self.spellings(host)]
        return [self.short, *flags] if self.short and host == "pupick" else flags

    def feeds(self, cls: type) -> str | None:
        """The field of settings class ``cls`` this knob sets, or None."""
        return next((name for target, name in self.targets if target is cls), None)

    def parse(self, text: str | None, label: str | None = None) -> Any:
        """A value typed as text (a RELION parameter) -> a checked value; blank -> None (the default).

        Errors are SettingsErrors naming ``label`` (default: the canonical name), the spelling the user typed.
        """
        if text is None or str(text).strip() == "":
            return None
        label = label or self.name
        value = str(text).strip()
        if self.choices:
            if value.lower() not in self.choices:
                raise SettingsError(f"parameter '{label}': {text!r} is not one of {', '.join(self.choices)}")
            return value.lower()
        if self.kind is bool:
            word = value.lower()
            if word not in _TRUE + _FALSE:
                raise SettingsError(f"parameter '{label}': {text!r} is not yes or no")
            return word in _TRUE
        if self.kind is str:
            return value
        try:
            number = float(value)
            number = int(number) if self.kind is int and number.is_integer() else self.kind(value)
        except ValueError:
            article = "n integer" if self.kind is int else " number"
            raise SettingsError(f"parameter '{label}': {value!r} is not a{article}") from None
        if not math.isfinite(number):
            raise SettingsError(f"parameter '{label}': {value} is not a finite number")
        problem = self.out_of_range(number)
        if problem:
            raise SettingsError(f"parameter '{label}': {value} must be {problem}")
        return number

    def out_of_range(self, number: float) -> str:
        """What ``number`` breaks (``'> 0'``), or '' when it lies within the bounds."""
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""

    def to_setting(self, value: Any) -> Any:
        """A front end's value as the settings field wants it ('4' -> 4 for int choices, 'none' -> None)."""
        if isinstance(value, str) and value.strip().lower() in self.none_words:
            return None
        if self.kind is int and isinstance(value, str):
            return int(value)
        return value


_TRUE: tuple[str, ...] = ("yes", "y", "true", "1", "on")
_FALSE: tuple[str, ...] = ("no", "n", "false", "0", "off")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_P, _T, _E = PreprocessSettings, TrainSettings, ExtractSettings

#: The table, in the order front ends list the options.
PARAMETERS: tuple[Parameter, ...] = (
    # ---------------------------------------------------------------- scale and normalization
    Parameter("particle_diameter", "Particle diameter in A (needed to train; sets the default scale).",
              ((_T, "particle_diameter"),), low=0.0, low_open=True, aliases=("diameter",), short="-d"),
    Parameter("pixel_size", "Working pixel size in A/px. Default: chosen so the particle radius is ~12 px.",
              ((_P, "pixel_size"),), low=0.0, low_open=True),
    Parameter("downsample", "Downsampling factor (>= 1), instead of --pixel-size.",
              ((_P, "downsample"),), low=1.0),
    Parameter("normalization", "Each micrograph's median and robust spread are removed first (so offset and "
              "gain do not matter); gmm then applies the two-component mixture's gain, robust stops there, "
              "standard uses the plain mean and standard deviation instead.",
              ((_P, "normalization"),), kind=str, choices=_s.NORMALIZATIONS),
    # ---------------------------------------------------------------- training
    Parameter("expected_particles", "Expected particles per micrograph (sets pi). If omitted, pupick assumes "
              "twice the mean number you labelled per labelled micrograph and logs it; a rough guess within "
              "2x is fine.", ((_T, "expected_particles"),), low=0.0, low_open=True, short="-n"),
    Parameter("architecture", "Classifier architecture.", ((_T, "model"),), kind=str,
              choices=_s.ARCHITECTURES, aliases=("model_arch",), host_aliases={"pupick": ("model",)}),
    Parameter("width", "Channels in the first layers.", ((_T, "width"),), kind=int),
    Parameter("objective", "PU objective.", ((_T, "objective"),), kind=str, choices=_s.OBJECTIVES),
    Parameter("epochs", "Training epochs.", ((_T, "epochs"),), kind=int, low=1.0),
    Parameter("steps_per_epoch", "Training steps per epoch.", ((_T, "steps_per_epoch"),), kind=int, low=1.0),
    Parameter("minibatch_size", "Patches per training step.", ((_T, "minibatch_size"),), kind=int, low=2.0),
    Parameter("patch_size", "Classifier outputs per side of a training patch.", ((_T, "patch_size"),),
              kind=int),
    Parameter("positive_fraction", "Fraction of a step's patches centred on labelled particles.",
              ((_T, "positive_fraction"),), low=0.0, low_open=True, high=1.0, high_open=True),
    Parameter("learning_rate", "Learning rate.", ((_T, "learning_rate"),), low=0.0, low_open=True),
    Parameter("lr_schedule", "Learning rate over the run: constant, or a cosine decay to 5%.",
              ((_T, "lr_schedule"),), kind=str, choices=_s.LR_SCHEDULES),
    Parameter("init", "Start from a pretrained model: 'general' (shipped with pupick: trained on many "
              "synthetic particles), a model.pupick file, or 'none' for random weights. 'auto': 'general' "
              "when --architecture and --width are the defaults, else random weights.",
              ((_T, "init"),), kind=str, none_words=("", "none")),
    Parameter("augment", "Train on all 8 turns and mirrors of each patch (particles lie in every "
              "orientation).",
              ((_T, "augment"),), kind=bool),
    Parameter("training_radius", "Working pixels around each label counted as positive.",
              ((_T, "training_radius"),), kind=int),
    Parameter("ge_weight", "Weight of the generalized-expectation term of the ge-* objectives.",
              ((_T, "ge_weight"),), low=0.0),
    Parameter("autoencoder", "Autoencoder weight gamma (default 10/N for N <= 250 labels, else 0).",
              ((_T, "autoencoder"),), low=0.0),
    Parameter("holdout", "Fraction of the labelled data held out to measure precision/recall/AP per epoch "
              "(for early stopping and the recommended threshold).",
              ((_T, "holdout_fraction"),), low=0.0, high=1.0, high_open=True),
    Parameter("holdout_by", "Hold out whole micrographs, or a strip of every labelled micrograph; auto: "
              "micrographs when at least 2 are labelled, else a strip of the one.",
              ((_T, "holdout_by"),), kind=str, choices=_s.HOLDOUT_KINDS),
    Parameter("keep", "Which epoch the model file holds: last (the end of the learning-rate schedule) or "
              "best (the best held-out AP, stopping early after --patience epochs without a gain).",
              ((_T, "keep"),), kind=str, choices=_s.KEEP_EPOCHS),
    Parameter("patience", "Early stopping patience in epochs (with --keep best).", ((_T, "patience"),),
              kind=int),
    Parameter("refit", "After the held-out run has measured the threshold table, train again on every "
              "labelled micrograph (hold-out included) and keep that network (with --keep last; twice the "
              "training time).",
              ((_T, "refit"),), kind=bool),
    Parameter("anchor", "Pull the weights towards the start model's (--init) with this weight on their "
              "squared distance (L2-SP); 0: off.", ((_T, "anchor"),), low=0.0),
    # ---------------------------------------------------------------- picking
    Parameter("threshold", "Score threshold on the log-likelihood-ratio scale (logit): 0 = even odds, -3 "
              "keeps picks ~5% likely. Default: the threshold recommended at training.",
              ((_E, "threshold"),), short="-t"),
    Parameter("radius", "NMS radius in working pixels (default: the particle radius).",
              ((_E, "radius"),), kind=int, short="-r"),
    Parameter("edge_margin",
              "Drop picks this close to the border (working px; 0 keeps particles cut by the border).",
              ((_E, "edge_margin"),),
              kind=int),
    Parameter("max_picks", "At most this many picks per micrograph.", ((_E, "max_picks"),), kind=int,
              low=1.0),
    Parameter("batch_size", "Micrographs per forward pass.", ((_E, "batch_size"),), kind=int),
    Parameter("symmetries", "Average each score map over this many turns/mirrors of the micrograph (steadier "
              "scores; costs that many forward passes).",
              ((_E, "symmetries"),), kind=int, choices=tuple(map(str, _s.SYMMETRIES))),
    Parameter("tile_size", "Score micrographs larger than this (working px) in tiles; lower it on a GPU with "
              "little memory.", ((_E, "tile_size"),), kind=int),
    Parameter("workers", "Processes reading and preprocessing micrographs ahead of scoring (0: one "
              "background thread; more help a GPU host with many cores).", ((_E, "num_workers"),), kind=int),
    # ---------------------------------------------------------------- every run
    Parameter("precision", "Arithmetic of the training convolutions: auto (bf16 on a GPU and on a CPU with "
              "native bf16, else fp32), fp32 or bf16.", ((_T, "precision"),), kind=str,
              choices=_s.PRECISIONS),
    Parameter("seed", "Random seed.", ((_T, "seed"), (_P, "seed")), kind=int),
    Parameter("device", "auto, cpu, cuda or cuda:N.", ((_T, "device"), (_E, "device")), kind=str),
    Parameter("threads", "CPU threads for torch (0: all cores; with several ranks, each rank's share).",
              ((_T, "num_threads"),), kind=int, low=0.0),
)

_BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}


def parameter(name: str) -> Parameter:
    """The table entry called ``name`` (canonical spelling)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no parameter {name!r} in the parameter table") from None


def parameters_for(*classes: type) -> list[Parameter]:
    """The entries that feed any of the settings ``classes``, in table order."""
    return [p for p in PARAMETERS if any(p.feeds(cls) for cls in classes)]


def settings_from(cls: type[S], values: Mapping[str, Any], **fixed: Any) -> S:
    """``cls`` (a settings dataclass) from front-end ``values`` keyed by canonical parameter name.

    A value of None (or a missing name) leaves the field at its default; names that are no
    parameter of ``cls`` are ignored, so a front end may pass all its options. ``fixed``
    are field values the front end decided itself (e.g. ``device`` after rank placement).
    """
    kwargs: dict[str, Any] = {}
    for p in PARAMETERS:
        name = p.feeds(cls)
        if name is not None and values.get(p.name) is not None:
            kwargs[name] = p.to_setting(values[p.name])
    kwargs.update(fixed)
    return cls(**kwargs)
