"""Settings dataclasses: validation on construction, and the downsampling-factor logic."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from pupick_ext import (
    ExtractSettings,
    MicrographEntry,
    PreprocessSettings,
    PupickError,
    SettingsError,
    TrainSettings,
    micrograph_stem,
)
from pupick_ext.settings import TARGET_RADIUS_PX


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(pixel_size=2.0, downsample=2.0),
        dict(pixel_size=0.0),
        dict(pixel_size=-1.0),
        dict(pixel_size=math.nan),
        dict(downsample=0.5),
        dict(downsample=0.0),
        dict(downsample=-2.0),
        dict(downsample=math.nan),
        dict(normalization="zscore"),
    ],
)
def test_preprocess_settings_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(SettingsError) as info:
        PreprocessSettings(**kwargs)
    assert isinstance(info.value, PupickError)
    assert str(info.value)  # a readable one-line message
    assert "\n" not in str(info.value)


def test_preprocess_settings_defaults_and_dict() -> None:
    s = PreprocessSettings(downsample=4, cache_dir="cache")  # type: ignore[arg-type]
    assert isinstance(s.cache_dir, Path)
    d = s.to_dict()
    assert d["downsample"] == 4 and d["cache_dir"] == "cache" and d["normalization"] == "robust"
    assert PreprocessSettings().normalization == "robust" and PreprocessSettings().seed == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 3  # type: ignore[misc]


def test_factor_for_downsample_wins() -> None:
    s = PreprocessSettings(downsample=3.5)
    assert s.factor_for(1.0) == 3.5
    assert s.factor_for(0.5, particle_diameter=300) == 3.5


def test_factor_for_working_pixel_size() -> None:
    s = PreprocessSettings(pixel_size=4.0)
    assert s.factor_for(1.0) == pytest.approx(4.0)
    assert s.factor_for(1.6, particle_diameter=200) == pytest.approx(2.5)
    assert s.factor_for(8.0) == 1.0  # never upsample


def test_factor_for_particle_diameter() -> None:
    s = PreprocessSettings()
    assert s.factor_for(1.0) == 1.0  # nothing known: keep the original grid
    # radius 150 A / 2 / 1.25 A/px = 60 px -> 60 / 12 = 5
    assert s.factor_for(1.25, particle_diameter=150) == pytest.approx(60 / TARGET_RADIUS_PX)
    assert s.factor_for(1.0, particle_diameter=10) == 1.0  # small particle: no upsampling
    factor = s.factor_for(0.83, particle_diameter=220)
    assert 220 / 2 / 0.83 / factor == pytest.approx(TARGET_RADIUS_PX)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(particle_diameter=0),
        dict(particle_diameter=-5),
        dict(particle_diameter=100, model="resnet99"),
        dict(particle_diameter=100, objective="bce"),
        dict(particle_diameter=100, width=2),
        dict(particle_diameter=100, expected_particles=0),
        dict(particle_diameter=100, training_radius=-1),
        dict(particle_diameter=100, epochs=0),
        dict(particle_diameter=100, steps_per_epoch=0),
        dict(particle_diameter=100, minibatch_size=1),
        dict(particle_diameter=100, positive_fraction=0.0),
        dict(particle_diameter=100, positive_fraction=1.0),
        dict(particle_diameter=100, learning_rate=0),
        dict(particle_diameter=100, autoencoder=-0.1),
        dict(particle_diameter=100, holdout_fraction=1.0),
        dict(particle_diameter=100, holdout_fraction=-0.1),
    ],
)
def test_train_settings_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(SettingsError):
        TrainSettings(**kwargs)


def test_train_settings_accepts_defaults_and_every_choice() -> None:
    from pupick_ext.settings import ARCHITECTURES, OBJECTIVES

    base = TrainSettings(particle_diameter=150)
    assert base.model == "resnet8" and base.objective == "ge-binomial"
    for arch in ARCHITECTURES:
        TrainSettings(particle_diameter=150, model=arch)  # type: ignore[arg-type]
    for objective in OBJECTIVES:
        TrainSettings(particle_diameter=150, objective=objective)  # type: ignore[arg-type]
    assert base.to_dict()["particle_diameter"] == 150


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(radius=0),
        dict(edge_margin=-1),
        dict(max_picks=0),
        dict(batch_size=0),
        dict(tile_size=32),
    ],
)
def test_extract_settings_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(SettingsError):
        ExtractSettings(**kwargs)


def test_extract_settings_defaults() -> None:
    s = ExtractSettings()
    assert s.threshold is None and s.radius is None and s.batch_size >= 1
    ExtractSettings(threshold=-3.0, radius=5, edge_margin=0, max_picks=10)


def test_micrograph_entry() -> None:
    e = MicrographEntry("MotionCorr/job002/Movies/mic_001.mrc")  # type: ignore[arg-type]
    assert isinstance(e.path, Path) and e.name == "mic_001" and e.pixel_size is None
    assert MicrographEntry(Path("a.mrc"), name="custom").name == "custom"
    with pytest.raises(SettingsError, match="pixel size"):
        MicrographEntry(Path("a.mrc"), pixel_size=0.0)
    with pytest.raises(SettingsError):
        MicrographEntry(Path("a.mrc"), pixel_size=-1.0)


@pytest.mark.parametrize(
    ("raw", "stem"),
    [
        ("mic_001.mrc", "mic_001"),
        ("dir/mic_001.MRC", "mic_001"),
        ("stack.mrcs", "stack"),
        ("a.tif", "a"),
        ("a.tiff", "a"),
        ("coords/mic_001_autopick.star", "mic_001_autopick"),
        ("picks.txt", "picks"),
        ("x.box", "x"),
        ("J12_exposure.cs", "J12_exposure"),
        ("mic.001", "mic.001"),
        ("noext", "noext"),
    ],
)
def test_micrograph_stem(raw: str, stem: str) -> None:
    assert micrograph_stem(raw) == stem


# ------------------------------------------------------------------ the parameter table
def test_every_settings_field_has_one_table_entry() -> None:
    """A new setting is the dataclass field plus one PARAMETERS entry; every front end renders it."""
    from pupick_ext import ExtractSettings, PreprocessSettings, TrainSettings, parameters_for

    cases: list[tuple[type, set[str]]] = [(TrainSettings, set()), (ExtractSettings, set()),
                                          (PreprocessSettings, {"cache_dir"})]
    for cls, internal in cases:
        fed = [p.feeds(cls) for p in parameters_for(cls)]
        assert sorted(fed) == sorted(set(fed)), cls  # one entry per field
        assert set(fed) | internal == {f.name for f in dataclasses.fields(cls)}, cls


def test_table_defaults_and_choices_come_from_the_settings() -> None:
    from pupick_ext import PARAMETERS, ExtractSettings, TrainSettings, parameter
    from pupick_ext import settings as settings_module

    train, extract = TrainSettings(particle_diameter=100.0), ExtractSettings()
    for p in PARAMETERS:
        cls, name = p.targets[0]
        sample = train if cls is TrainSettings else extract if cls is ExtractSettings else cls()
        if name != "particle_diameter":
            assert p.default == getattr(sample, name), p.name
    assert parameter("particle_diameter").default is None
    assert parameter("architecture").choices == settings_module.ARCHITECTURES
    assert parameter("objective").choices == settings_module.OBJECTIVES
    assert parameter("threads").default == 0  # one thread default for every front end


def test_settings_from_and_parse() -> None:
    from pupick_ext import ExtractSettings, SettingsError, TrainSettings, parameter, settings_from

    s = settings_from(TrainSettings, {"particle_diameter": 120.0, "architecture": "conv31", "init": "none",
                                      "epochs": None, "micrographs": ("ignored",)}, device="cpu")
    assert s == TrainSettings(particle_diameter=120.0, model="conv31", init=None, device="cpu")
    assert settings_from(ExtractSettings, {"symmetries": "8"}).symmetries == 8
    assert parameter("epochs").parse(" 3 ") == 3 and parameter("epochs").parse("") is None
    assert parameter("architecture").parse("ResNet16") == "resnet16"
    with pytest.raises(SettingsError, match="'diameter': -5 must be > 0"):
        parameter("particle_diameter").parse("-5", "diameter")
    with pytest.raises(SettingsError, match="is not an integer"):
        parameter("epochs").parse("2.5")
    with pytest.raises(SettingsError, match="finite"):
        parameter("learning_rate").parse("nan")
