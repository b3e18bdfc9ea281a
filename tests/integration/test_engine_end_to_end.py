"""The engine end to end through the `pupick` CLI on built-in synthetic data.

One small training run (module-scoped) feeds the extract / evaluate / resume tests.
The quality floor is a generous version of the issue's target (AP >= 0.8 from <= 300
labels on the medium preset, measured by `pupick demo`), sized for a 2-core CI machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pupick_ext import (
    ExtractSettings,
    Picks,
    PreprocessSettings,
    evaluate,
    extract,
    generate_demo_data,
    load_model,
    read_coordinates,
    write_coordinates,
)
from pupick_ext.cli import main
from pupick_ext.demo.demo import labelled_subset
from pupick_ext.pick.baseline import dog_extract

pytestmark = pytest.mark.slow

N_TRAIN, N_TEST = 5, 3


def run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    data = generate_demo_data(root / "data", n_micrographs=N_TRAIN + N_TEST, preset="medium", seed=3)
    train_mics, test_mics = data.micrographs[:N_TRAIN], data.micrographs[N_TRAIN:]
    labels = labelled_subset(data.truth, [m.name for m in train_mics], 36, seed=3)
    write_coordinates(labels, root / "labels.txt")
    train_list = root / "train.txt"
    train_list.write_text("\n".join(str(m.path) for m in train_mics) + "\n")
    test_list = root / "test.txt"
    test_list.write_text("\n".join(str(m.path) for m in test_mics) + "\n")
    output = run(["train", "-m", str(train_list), "-l", str(root / "labels.txt"),
                  "-d", str(data.particle_diameter), "-n", "45", "--epochs", "4", "--steps-per-epoch", "30",
                  "--threads", "2", "-o", str(root / "model")])
    names = [m.name for m in test_mics]
    return {"root": root, "data": data, "train_list": train_list, "test_list": test_list,
            "test_mics": test_mics,
            "truth": data.truth.select(np.isin(data.truth.micrograph, names)), "output": output,
            "radius": data.particle_diameter / 2 / data.pixel_size}


def test_training_writes_model_pictures_and_threshold_help(trained: dict) -> None:
    model_dir = trained["root"] / "model"
    for name in ("model.pupick", "training_curve.png", "threshold_table.png", "threshold_table.tsv",
                 "training_history.json", "train_settings.json", "train_run.json", "checkpoint.pt"):
        assert (model_dir / name).is_file(), name
    assert "recommended" in trained["output"]
    model = load_model(model_dir / "model.pupick")
    assert model.info["architecture"] == "resnet8"
    assert model.info["pixel_size"] == pytest.approx(1.5 * model.info["downsample"], rel=0.02)
    history = json.loads((model_dir / "training_history.json").read_text())
    assert len(history) == 4 and all({"loss", "ap", "precision", "recall"} <= set(h) for h in history)


def test_picks_beat_difference_of_gaussians(trained: dict) -> None:
    model = load_model(trained["root"] / "model" / "model.pupick")
    picks = extract(model, trained["test_mics"], ExtractSettings(threshold=-8.0, device="cpu"))
    ours = evaluate(picks, trained["truth"], trained["radius"])
    dog = evaluate(dog_extract(trained["test_mics"], 150.0, PreprocessSettings(normalization="standard")),
                   trained["truth"], trained["radius"])
    assert ours.average_precision >= 0.6, ours.summary()
    assert ours.average_precision > dog.average_precision + 0.15, (ours.summary(), dog.summary())


def test_extract_and_evaluate_through_the_cli(trained: dict) -> None:
    root = trained["root"]
    model = root / "model" / "model.pupick"
    run(["extract", "-m", str(trained["test_list"]), "--model", str(model), "-o", str(root / "picks.txt"),
         "-t", "-8"])
    picks = read_coordinates(root / "picks.txt")
    assert set(picks.names) == {m.name for m in trained["test_mics"]}
    assert np.isfinite(picks.score).all()
    # coordinates are in original (unbinned) pixels: they span the 1024-pixel micrograph
    assert picks.x.max() > 600 and picks.y.max() > 600
    write_coordinates(trained["truth"], root / "truth.txt")
    out = run(["evaluate", "-p", str(root / "picks.txt"), "-r", str(root / "truth.txt"), "-d", "150",
               "--pixel-size", "1.5", "-o", str(root / "eval")])
    assert "average precision" in out
    assert (root / "eval" / "pr_curve.png").stat().st_size > 1000
    assert (root / "eval" / "pr_curve.csv").read_text().splitlines()[0].startswith("rank,threshold")


def test_per_micrograph_output_skips_finished_micrographs(trained: dict) -> None:
    root = trained["root"]
    model = root / "model" / "model.pupick"
    out = root / "star_picks"
    extract = ["extract", "-m", str(trained["test_list"]), "--model", str(model), "-o", f"{out}/",
               "--suffix", "_pupick"]
    run(extract)
    files = sorted(out.glob("*_pupick.star"))
    assert [f.name for f in files] == [f"{m.name}_pupick.star" for m in trained["test_mics"]]
    before = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()
    run(extract)
    assert files[0].exists()
    assert files[1].stat().st_mtime_ns == before[files[1]]  # untouched: already finished


def test_rerunning_training_resumes_from_the_checkpoint(trained: dict) -> None:
    root = trained["root"]
    data = trained["data"]
    output = CliRunner().invoke(main, [
        "-v", "train", "-m", str(trained["train_list"]), "-l", str(root / "labels.txt"), "-d",
        str(data.particle_diameter), "-n", "45", "--epochs", "4", "--steps-per-epoch", "30", "--threads", "2",
        "-o", str(root / "model")])
    assert output.exit_code == 0, output.output
    history = json.loads((root / "model" / "training_history.json").read_text())
    assert len(history) == 4  # nothing retrained: the checkpoint already held all epochs


def test_dog_method_through_the_cli(trained: dict) -> None:
    root = trained["root"]
    run(["extract", "--method", "dog", "-d", "150", "-m", str(trained["test_list"]),
         "-o", str(root / "dog.txt")])
    dog = read_coordinates(root / "dog.txt")
    assert len(dog) > 0 and set(dog.names) <= {m.name for m in trained["test_mics"]}


def test_model_trained_at_another_pixel_size_rescales_micrographs(trained: dict, tmp_path: Path) -> None:
    """A micrograph at half the pixel size (twice the pixels) is brought to the model's scale."""
    import mrcfile

    from pupick_ext import MicrographEntry
    from pupick_ext.prep.downsample import fourier_pad

    mic = trained["test_mics"][0]
    with mrcfile.open(mic.path) as f:
        image = f.data.astype(np.float32)
    big = fourier_pad(image, (image.shape[0] * 2, image.shape[1] * 2))
    path = tmp_path / f"{mic.name}.mrc"
    with mrcfile.new(path) as f:
        f.set_data(big)
        f.voxel_size = 0.75
    model = load_model(trained["root"] / "model" / "model.pupick")
    settings = ExtractSettings(threshold=-8.0, device="cpu")
    small = extract(model, [mic], settings)
    large = extract(model, [MicrographEntry(path, mic.name)], settings)
    truth = trained["truth"].for_micrograph(mic.name)
    ap_small = evaluate(small, truth, trained["radius"]).average_precision
    ap_large = evaluate(large.scaled(0.5), truth, trained["radius"]).average_precision
    assert abs(ap_small - ap_large) < 0.1
    assert isinstance(large, Picks) and large.x.max() > 1024  # original pixels of the larger micrograph


def test_picks_do_not_depend_on_intensity_offset_gain_or_storage_type(trained: dict, tmp_path: Path) -> None:
    """One micrograph stored as counts, as a*x + b, and as int8/int16/float16 copies: the same picks.

    Micrographs reach users gain-normalized, dark- or background-subtracted and in several
    MRC modes; none of that may change what is picked, in position or in rank.
    """
    import mrcfile

    mic = trained["test_mics"][0]
    with mrcfile.open(mic.path) as f:
        image = f.data.astype(np.float64)
    counts = np.clip(np.round(image - np.median(image)), -120, 120)  # fits every integer mode exactly
    copies = {"float32": counts.astype(np.float32), "int8": counts.astype(np.int8),
              "int16": counts.astype(np.int16), "float16": counts.astype(np.float16),
              "scaled": (counts * 0.37 - 1234.5).astype(np.float32),
              "shifted": (counts * 8.0 + 1000.0).astype(np.float32)}
    model = trained["root"] / "model" / "model.pupick"
    tables = {}
    for name, data in copies.items():
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "mic.mrc"
        with mrcfile.new(path) as f:
            f.set_data(data)
            f.voxel_size = 1.5
        run(["extract", "-m", str(path), "--model", str(model), "-o", str(folder / "picks.txt"), "-t", "-6"])
        tables[name] = read_coordinates(folder / "picks.txt")
    reference = tables["float32"]
    assert len(reference) > 10
    for name, picks in tables.items():
        assert len(picks) == len(reference), name
        np.testing.assert_array_equal(picks.x, reference.x, err_msg=name)
        np.testing.assert_array_equal(picks.y, reference.y, err_msg=name)
        np.testing.assert_allclose(picks.score, reference.score, atol=1e-3, err_msg=name)


def test_a_threshold_that_picks_nothing_is_reported(trained: dict, caplog: pytest.LogCaptureFixture) -> None:
    model = load_model(trained["root"] / "model" / "model.pupick")
    with caplog.at_level("WARNING"):
        picks = extract(model, trained["test_mics"][:1], ExtractSettings(threshold=60.0, device="cpu"))
    assert len(picks) == 0
    assert any("picked nothing" in r.getMessage() for r in caplog.records)
