"""The synthetic demo-data generator: determinism, files, ground truth and image statistics."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from pupick_ext.demo.synthetic import (
    PRESETS,
    DemoData,
    _micrograph_rng,
    _synthesize,
    generate_demo_data,
)
from pupick_ext.errors import SettingsError

SHAPE = (384, 384)
RADIUS = 50.0  # 150 A at 1.5 A/px

OPTICS_COLUMNS = {
    "rlnOpticsGroupName", "rlnOpticsGroup", "rlnMicrographOriginalPixelSize", "rlnVoltage",
    "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnMicrographPixelSize",
}
MICROGRAPH_COLUMNS = {
    "rlnMicrographName", "rlnOpticsGroup", "rlnDefocusU", "rlnDefocusV", "rlnCtfAstigmatism",
    "rlnDefocusAngle", "rlnCtfFigureOfMerit", "rlnCtfMaxResolution",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return generate_demo_data(tmp_path_factory.mktemp("demo"), n_micrographs=3, preset="medium",
                              seed=7, shape=SHAPE)


def _read(path) -> np.ndarray:
    with mrcfile.open(path, permissive=False) as mrc:
        return np.array(mrc.data)


def _distance_to_truth(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    d2 = np.full(shape, np.inf)
    for cx, cy in zip(x, y, strict=True):
        d2 = np.minimum(d2, (cols - cx) ** 2 + (rows - cy) ** 2)
    return np.sqrt(d2)


def test_same_seed_gives_identical_data(demo: DemoData, tmp_path) -> None:
    again = generate_demo_data(tmp_path / "a", n_micrographs=3, preset="medium", seed=7, shape=SHAPE)
    for first, second in zip(demo.micrographs, again.micrographs, strict=True):
        np.testing.assert_array_equal(_read(first.path), _read(second.path))
    np.testing.assert_array_equal(demo.truth.x, again.truth.x)
    np.testing.assert_array_equal(demo.truth.y, again.truth.y)
    other = generate_demo_data(tmp_path / "b", n_micrographs=1, preset="medium", seed=8, shape=SHAPE)
    assert not np.array_equal(_read(other.micrographs[0].path), _read(demo.micrographs[0].path))


def test_micrograph_zero_does_not_depend_on_the_count(demo: DemoData, tmp_path) -> None:
    one = generate_demo_data(tmp_path, n_micrographs=1, preset="medium", seed=7, shape=SHAPE)
    np.testing.assert_array_equal(_read(one.micrographs[0].path), _read(demo.micrographs[0].path))
    first = demo.truth.for_micrograph("mic_000")
    np.testing.assert_array_equal(one.truth.x, first.x)
    np.testing.assert_array_equal(one.truth.y, first.y)


def test_demo_data_fields(demo: DemoData) -> None:
    assert demo.particle_diameter == 150.0
    assert demo.pixel_size == 1.5
    assert demo.preset == "medium"
    assert [m.name for m in demo.micrographs] == ["mic_000", "mic_001", "mic_002"]
    assert all(m.pixel_size == 1.5 for m in demo.micrographs)
    assert demo.truth.names == ["mic_000", "mic_001", "mic_002"]
    assert np.isnan(demo.truth.score).all()
    assert len(demo.truth) > 0


def test_micrographs_are_float32_mrc_with_pixel_size(demo: DemoData) -> None:
    for entry in demo.micrographs:
        assert entry.path == demo.outdir / "Micrographs" / f"{entry.name}.mrc"
        with mrcfile.open(entry.path, permissive=False) as mrc:
            assert mrc.data.ndim == 2 and mrc.data.shape == SHAPE
            assert mrc.data.dtype == np.float32
            assert int(mrc.header.mode) == 2
            assert np.allclose([mrc.voxel_size.x, mrc.voxel_size.y], 1.5)
            assert np.isfinite(mrc.data).all() and mrc.data.std() > 0


def test_micrographs_star_is_relion31_ctffind_output(demo: DemoData) -> None:
    assert demo.micrographs_star == demo.outdir / "micrographs_ctf.star"
    blocks = starfile.read(demo.micrographs_star, always_dict=True)
    assert set(blocks) == {"optics", "micrographs"}
    optics, mics = blocks["optics"], blocks["micrographs"]
    assert set(optics.columns) == OPTICS_COLUMNS
    assert MICROGRAPH_COLUMNS <= set(mics.columns) <= MICROGRAPH_COLUMNS | {"rlnCtfImage"}
    assert optics["rlnVoltage"].iloc[0] == 300 and optics["rlnSphericalAberration"].iloc[0] == 2.7
    assert optics["rlnAmplitudeContrast"].iloc[0] == 0.1
    assert optics["rlnMicrographPixelSize"].iloc[0] == 1.5
    assert list(mics["rlnMicrographName"]) == [f"Micrographs/mic_00{i}.mrc" for i in range(3)]
    assert all((demo.outdir / name).is_file() for name in mics["rlnMicrographName"])
    assert (mics["rlnDefocusU"] >= mics["rlnDefocusV"]).all()
    assert mics["rlnDefocusU"].between(9000, 31000).all()
    astigmatism = mics["rlnDefocusU"] - mics["rlnDefocusV"]
    np.testing.assert_allclose(mics["rlnCtfAstigmatism"], astigmatism, atol=1e-3)
    text = demo.micrographs_star.read_text()
    assert text.count("# version 30001") == 2  # RELION 3.1 reads the version tag before each block
    assert not list(demo.outdir.rglob(".*tmp*"))  # no temporary files left behind


def test_truth_files_match_truth(demo: DemoData) -> None:
    assert demo.truth_file == demo.outdir / "truth.txt"
    text = pd.read_csv(demo.truth_file, sep="\t")
    assert list(text.columns) == ["image_name", "x_coord", "y_coord"]
    assert len(text) == len(demo.truth)
    np.testing.assert_allclose(text["x_coord"], demo.truth.x)
    np.testing.assert_allclose(text["y_coord"], demo.truth.y)
    assert list(text["image_name"]) == list(demo.truth.micrograph)
    for name, picks in demo.truth.groups():
        star = starfile.read(demo.outdir / "truth" / f"{name}.star")
        assert list(star.columns) == ["rlnCoordinateX", "rlnCoordinateY"]
        np.testing.assert_allclose(star["rlnCoordinateX"], picks.x)
        np.testing.assert_allclose(star["rlnCoordinateY"], picks.y)


def test_truth_inside_image_and_not_overlapping(demo: DemoData) -> None:
    for _, picks in demo.truth.groups():
        assert ((picks.x >= 0) & (picks.x <= SHAPE[1] - 1)).all()
        assert ((picks.y >= 0) & (picks.y <= SHAPE[0] - 1)).all()
        d = np.hypot(picks.x[:, None] - picks.x[None, :], picks.y[:, None] - picks.y[None, :])
        d[np.diag_indices_from(d)] = np.inf
        assert d.min() >= 0.8 * 2 * RADIUS


def test_full_size_micrograph_has_a_realistic_particle_count() -> None:
    counts = [_synthesize(_micrograph_rng(0, i), (1024, 1024), PRESETS["medium"]).x.size for i in range(1)]
    assert all(15 <= c <= 65 for c in counts), counts  # clutter (aggregates, beads, carbon) takes area


def test_particles_are_darker_than_background() -> None:
    for i in range(3):
        mic = _synthesize(_micrograph_rng(3, i), SHAPE, PRESETS["easy"], components=True)
        if mic.x.size == 0:
            continue
        # Divide out the smooth background (ice gradient, carbon, contaminants) so that the comparison
        # is with the background the particles sit on, then compare with the global median.
        background = mic.clean - mic.particle_signal
        flat = mic.image / background
        distance = _distance_to_truth(mic.x, mic.y, SHAPE)
        inside = distance <= RADIUS
        away = (distance > 1.5 * RADIUS) & ~mic.clutter
        assert flat[inside].mean() < np.median(flat[away]), i


def test_presets_are_ordered_by_snr() -> None:
    measured = {}
    for preset in ("easy", "medium", "hard"):
        signal = noise = 0.0
        for i in range(3):
            mic = _synthesize(_micrograph_rng(11, i), SHAPE, PRESETS[preset], components=True)
            inside = _distance_to_truth(mic.x, mic.y, SHAPE) <= RADIUS
            signal += float((mic.particle_signal[inside] ** 2).sum())
            noise += float(((mic.image - mic.clean)[inside] ** 2).sum())
        measured[preset] = signal / noise
    assert measured["easy"] > measured["medium"] > measured["hard"] > 0
    assert 0.04 <= measured["medium"] <= 0.12, measured


@pytest.mark.parametrize("kwargs", [{"preset": "impossible"}, {"n_micrographs": 0}, {"shape": (100, 100)}])
def test_bad_arguments_raise_settings_error(tmp_path, kwargs) -> None:
    with pytest.raises(SettingsError):
        generate_demo_data(tmp_path, **kwargs)


def test_another_particle_seed_gives_another_particle_of_the_same_size(tmp_path) -> None:
    from pupick_ext.demo.synthetic import PARTICLE_SEED, _particle_model

    default, other = _particle_model(PARTICLE_SEED), _particle_model(7)
    assert default[0].shape != other[0].shape or not np.allclose(default[0], other[0])
    radius = 150.0 / 2 / 1.5
    assert np.linalg.norm(other[0], axis=1).max() <= radius
    data = generate_demo_data(tmp_path / "p7", n_micrographs=2, preset="easy", seed=1, shape=(256, 256),
                              particle_seed=7)
    assert len(data.truth) > 0


def test_medium_micrographs_differ_in_dose_offset_and_gain() -> None:
    """As on a real grid and across programs: a picker keyed to absolute intensity must fail here."""
    means, ratios = [], []
    for i in range(8):
        mic = _synthesize(_micrograph_rng(5, i), SHAPE, PRESETS["medium"])
        means.append(float(mic.image.mean()))
        # shot noise from the pixel-to-pixel differences, free of the clutter's and the ice's variance
        shot = float(np.diff(mic.image.astype(np.float64), axis=1).var() / 2)
        ratios.append(shot / max(abs(float(mic.image.mean())), 1e-9))
    assert max(means) - min(means) > 0.5 * max(abs(m) for m in means)
    # raw Poisson counts have shot-noise variance ~ mean; stored gain*counts+offset do not
    assert any(abs(r - 1.0) > 0.5 for r in ratios) and any(abs(r - 1.0) < 0.5 for r in ratios)
