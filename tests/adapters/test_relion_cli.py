"""The External job's command line and the settings built from its parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from pupick_ext import ExtractSettings, PreprocessSettings, SettingsError, TrainSettings
from relion_wrapper import cli
from relion_wrapper.params import build_settings, device_name, params_from_args

RELION_31 = [
    "--o",
    "External/job001/",
    "--in_mics",
    "CtfFind/job003/micrographs_ctf.star",
    "--in_coords",
    "ManualPick/job002/coords_suffix_manualpick.star",
    "--diameter",
    "146",
    "--j",
    "1",
]


def params(*extra: str):
    args, _ = cli.parse_args([*RELION_31, *extra])
    return params_from_args(args)


def test_parses_relion_command_line() -> None:
    args, ignored = cli.parse_args(RELION_31)
    assert ignored == []
    assert (args.o, args.in_mics, args.in_coords, args.diameter, args.j) == (
        "External/job001/",
        "CtfFind/job003/micrographs_ctf.star",
        "ManualPick/job002/coords_suffix_manualpick.star",
        "146",
        "1",
    )


def test_unknown_arguments_are_returned_not_fatal() -> None:
    argv = [
        *RELION_31,
        "--in_3dref",
        "ref.mrc",
        "--in_mask",
        "m.mrc",
        "--in_movies",
        "movies.star",
        "--my_label",
        "3",
        "--flag",
    ]
    args, ignored = cli.parse_args(argv)
    assert ignored == [
        "--in_3dref",
        "ref.mrc",
        "--in_mask",
        "m.mrc",
        "--in_movies",
        "movies.star",
        "--my_label",
        "3",
        "--flag",
    ]
    assert args.diameter == "146"


def test_no_abbreviations() -> None:
    """A user's '--pixel 2' must not silently become --pixel_size."""
    args, ignored = cli.parse_args([*RELION_31, "--pixel", "2"])
    assert args.pixel_size is None and ignored == ["--pixel", "2"]


def test_empty_parameter_values() -> None:
    """RELION writes '--<label> <value>' even when the value field is empty."""
    p = params("--threshold", "--epochs", "--mode", "--debug")
    assert p.threshold is None and p.epochs is None and p.mode == "train+extract" and p.debug is True


def test_negative_threshold() -> None:
    assert params("--threshold", "-2.5").threshold == -2.5


def test_defaults() -> None:
    p = params()
    assert (p.mode, p.device, p.suffix, p.threads, p.pictures, p.relion_version) == (
        "train+extract",
        "auto",
        "pupick",
        1,
        3,
        None,
    )
    s = build_settings(p)
    assert s.preprocess == PreprocessSettings(seed=0)
    assert s.train == TrainSettings(particle_diameter=146.0, num_threads=1)
    assert s.extract == ExtractSettings()


def test_parameters_map_to_settings() -> None:
    p = params(
        "--pixel_size",
        "4",
        "--expected_particles",
        "300",
        "--threshold",
        "1.5",
        "--epochs",
        "3",
        "--steps_per_epoch",
        "7",
        "--minibatch_size",
        "8",
        "--model_arch",
        "ResNet16",
        "--objective",
        "nnpu",
        "--normalization",
        "standard",
        "--max_picks",
        "500",
        "--device",
        "CPU",
        "--seed",
        "9",
        "--j",
        "4",
    )
    s = build_settings(p)
    assert s.preprocess == PreprocessSettings(pixel_size=4.0, normalization="standard", seed=9)
    assert s.train == TrainSettings(
        particle_diameter=146.0,
        model="resnet16",
        objective="nnpu",
        expected_particles=300.0,
        epochs=3,
        steps_per_epoch=7,
        minibatch_size=8,
        seed=9,
        device="cpu",
        num_threads=4,
    )
    assert s.extract == ExtractSettings(threshold=1.5, max_picks=500, device="cpu")


def test_downsample_and_gpu() -> None:
    p = params("--downsample", "4", "--gpu", "1")
    assert build_settings(p).preprocess.downsample == 4.0
    assert device_name(p) == "cuda:1"
    assert build_settings(p).train.device == "cuda:1"
    assert device_name(params("--gpu", "0,1")) == "cuda:0"
    assert device_name(params("--gpu", "1", "--device", "cpu")) == "cpu"


def test_extract_mode_needs_no_diameter() -> None:
    args, _ = cli.parse_args(
        [
            "--o",
            "External/job009/",
            "--in_mics",
            "m.star",
            "--mode",
            "extract",
            "--model",
            "External/job001/model.pupick",
        ]
    )
    p = params_from_args(args)
    assert not p.trains and p.extracts and p.model == "External/job001/model.pupick"
    assert build_settings(p).train is None


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--mode", "pick"], "'mode'"),
        (["--diameter", "abc"], "'diameter': 'abc' is not a number"),
        (["--diameter", "-5"], "'diameter': -5 must be > 0"),
        (["--epochs", "2.5"], "'epochs': '2.5' is not an integer"),
        (["--downsample", "0.5"], "'downsample'"),
        (["--pixel_size", "2", "--downsample", "2"], "not both"),
        (["--device", "tpu"], "'device'"),
        (["--gpu", "x"], "'gpu'"),
        (["--debug", "maybe"], "'debug'"),
        (["--suffix", "a/b"], "'suffix'"),
        (["--j", "0"], "'j'"),
    ],
)
def test_bad_parameters(extra: list[str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        build_settings(params(*extra))


def test_training_needs_diameter() -> None:
    args, _ = cli.parse_args(["--o", "External/job001/", "--in_mics", "m.star"])
    with pytest.raises(SettingsError, match="diameter"):
        params_from_args(args)


def test_extract_needs_model() -> None:
    args, _ = cli.parse_args(["--o", "External/job001/", "--in_mics", "m.star", "--mode", "extract"])
    with pytest.raises(SettingsError, match="'model'"):
        params_from_args(args)


def test_engine_rejects_are_settings_errors() -> None:
    with pytest.raises(SettingsError):
        build_settings(params("--model_arch", "vgg"))


def test_main_without_job_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--in_mics", "m.star"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--o" in err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--diameter" in out and "--in_mics" in out


def test_console_script_declared() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'pupick-relion = "relion_wrapper.cli:main"' in pyproject


def test_engine_flags_read_as_parameter_labels_in_run_out(capsys: pytest.CaptureFixture[str]) -> None:
    """run.out is read in RELION's job window, where pupick's --expected-particles is a parameter label."""
    import logging

    with cli._logging_to_stdout(debug=False):
        logging.getLogger("pupick_ext.training.data").info(
            "assuming %d per micrograph; set --expected-particles if you know better", 40
        )
        logging.getLogger("pupick_ext.cli").info("use --box-size or --in_mics as before")
        logging.getLogger("pupick_ext.cli").info("lower --tile-size")
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("assuming 40 per micrograph; set parameter expected_particles if you know better")
    assert out[1].endswith("use --box-size or --in_mics as before")  # no External-job label: unchanged
    assert out[2].endswith("lower parameter tile_size")  # every parameter-table knob is a label now


def test_canonical_labels_and_old_spellings() -> None:
    """Labels are the parameter table's names; the spellings saved jobs use still work."""
    args, _ = cli.parse_args(["--o", "External/job001/", "--in_mics", "m.star", "--particle_diameter", "120",
                              "--architecture", "conv31", "--learning_rate", "0.01", "--symmetries", "8"])
    p = params_from_args(args)
    s = build_settings(p)
    assert (p.diameter, p.model_arch, s.train.model, s.train.learning_rate, s.extract.symmetries) == (
        120.0, "conv31", "conv31", 0.01, 8)
    assert params("--model_arch", "conv63").values["architecture"] == "conv63"
    record = params("--epochs", "3").to_dict()
    assert (record["diameter"], record["epochs"], record["model_arch"]) == (146.0, 3, None)
    assert record["threads"] == 1
    with pytest.raises(SettingsError, match="'learning_rate': 0 must be > 0"):
        params("--learning_rate", "0")


def test_without_j_the_thread_default_is_the_engine_one() -> None:
    args, _ = cli.parse_args(["--o", "External/job001/", "--in_mics", "m.star", "--diameter", "100"])
    assert build_settings(params_from_args(args)).train.num_threads == TrainSettings(100.0).num_threads == 0
