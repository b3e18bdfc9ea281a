"""Fourier-crop downsampling: exact for factor 1, band-limited images survive, no aliasing,
DC and power preserved, odd sizes, and coordinates scale by original / working size."""

from __future__ import annotations

import numpy as np
import pytest

from pupick_ext.prep.downsample import downsample, fourier_crop, fourier_pad, working_shape


def cosines(
    shape: tuple[int, int], waves: list[tuple[int, int, float, float]], offset: float = 3.0
) -> np.ndarray:
    """offset + sum a cos(2 pi (ky y / rows + kx x / cols) + phase): periodic on the grid."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    image = np.full(shape, offset)
    for ky, kx, amplitude, phase in waves:
        image += amplitude * np.cos(2 * np.pi * (ky * yy / rows + kx * xx / cols) + phase)
    return image


def band_limited(shape: tuple[int, int], out: tuple[int, int]) -> list[tuple[int, int, float, float]]:
    """A few waves strictly below the Nyquist frequency of the smaller ``out`` grid."""
    waves = [(3, 5, 1.0, 0.3), (-7, 2, 0.5, 1.0), (10, -12, 0.25, 2.0), (0, 4, 0.75, -0.4), (6, 0, 0.3, 0.1)]
    return [w for w in waves if abs(w[0]) < out[0] / 2 and abs(w[1]) < out[1] / 2]


SIZES = [
    ((128, 128), (64, 64)),
    ((127, 131), (63, 65)),
    ((128, 96), (43, 31)),
    ((96, 128), (50, 70)),
    ((65, 64), (33, 32)),
]


def test_factor_one_is_an_exact_copy() -> None:
    image = np.random.default_rng(0).normal(size=(33, 47)).astype(np.float32)
    small, scale = downsample(image, 1.0)
    assert small is not image
    np.testing.assert_array_equal(small, image)
    assert small.dtype == np.float32
    assert scale == (1.0, 1.0)
    np.testing.assert_array_equal(fourier_crop(image, image.shape), image)


def test_crop_does_not_modify_its_input() -> None:
    image = np.random.default_rng(0).normal(size=(40, 50)).astype(np.float32)
    before = image.copy()
    fourier_crop(image, (20, 25))
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(("shape", "out"), SIZES)
def test_band_limited_image_survives_down_and_up(shape: tuple[int, int], out: tuple[int, int]) -> None:
    waves = band_limited(shape, out)
    image = cosines(shape, waves).astype(np.float32)
    small = fourier_crop(image, out)
    assert small.shape == out and small.dtype == np.float32
    # the small image is the same function sampled on the coarser grid
    np.testing.assert_allclose(small, cosines(out, waves), atol=1e-4)
    back = fourier_pad(small, shape)
    assert back.shape == shape
    np.testing.assert_allclose(back, image, atol=1e-4)


@pytest.mark.parametrize(("shape", "out"), SIZES)
def test_dc_and_power_are_preserved(shape: tuple[int, int], out: tuple[int, int]) -> None:
    image = cosines(shape, band_limited(shape, out), offset=-2.5).astype(np.float32)
    small = fourier_crop(image, out)
    assert float(small.mean()) == pytest.approx(float(image.mean()), abs=1e-5)
    # band-limited: Parseval on both grids gives the same mean of squares
    assert float((small.astype(np.float64) ** 2).mean()) == pytest.approx(
        float((image.astype(np.float64) ** 2).mean()), rel=1e-5
    )


def test_mean_is_preserved_for_noise() -> None:
    image = np.random.default_rng(1).normal(7.0, 3.0, size=(101, 77)).astype(np.float32)
    small = fourier_crop(image, (34, 26))
    assert float(small.mean()) == pytest.approx(float(image.astype(np.float64).mean()), abs=1e-4)
    # high frequencies are removed, so the power can only drop
    assert float(small.var()) < float(image.var())


def test_odd_sizes() -> None:
    image = np.random.default_rng(2).normal(size=(127, 131)).astype(np.float32)
    small = fourier_crop(image, (63, 65))
    assert small.shape == (63, 65)
    assert np.isfinite(small).all()


@pytest.mark.parametrize(
    ("wave", "direction"), [((0, 40), "x"), ((33, 0), "y"), ((50, 45), "xy"), ((-40, 60), "xy")]
)
def test_frequencies_above_new_nyquist_are_removed(wave: tuple[int, int], direction: str) -> None:
    image = cosines((128, 128), [(wave[0], wave[1], 1.0, 0.7)], offset=2.0).astype(np.float32)
    small = fourier_crop(image, (64, 64))
    assert float(small.std()) < 1e-5, f"aliasing along {direction}"
    assert float(small.mean()) == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("factor", [2, 2.5, 3, 4, 3.3])
def test_non_integer_factors_and_returned_scale(factor: float) -> None:
    shape = (120, 150)
    image = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    small, (sx, sy) = downsample(image, factor)
    assert small.shape == working_shape(shape, factor)
    assert small.shape == (round(shape[0] / factor), round(shape[1] / factor))
    assert sx == shape[1] / small.shape[1]
    assert sy == shape[0] / small.shape[0]


def test_working_shape() -> None:
    assert working_shape((4096, 4096), 8) == (512, 512)
    assert working_shape((100, 100), 3) == (33, 33)
    assert working_shape((3838, 3710), 1) == (3838, 3710)
    assert working_shape((10, 10), 1000) == (1, 1)


def test_tiny_output_is_the_mean() -> None:
    image = np.random.default_rng(4).normal(2.0, 1.0, size=(9, 11)).astype(np.float32)
    small = fourier_crop(image, (1, 1))
    assert small.shape == (1, 1)
    assert float(small[0, 0]) == pytest.approx(float(image.astype(np.float64).mean()), abs=1e-5)


def test_crop_refuses_to_grow() -> None:
    with pytest.raises(ValueError):
        fourier_crop(np.zeros((8, 8), np.float32), (16, 8))


def _centroid(image: np.ndarray) -> tuple[float, float]:
    weights = np.where(image > 0.05 * image.max(), image, 0.0)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return float((weights * xx).sum() / weights.sum()), float((weights * yy).sum() / weights.sum())


@pytest.mark.parametrize(
    ("shape", "factor", "centre"),
    [
        ((127, 131), 2, (40.3, 70.7)),
        ((128, 128), 4, (50.2, 77.9)),
        ((120, 150), 2.5, (97.1, 33.4)),
        ((128, 96), 3, (60.0, 50.0)),
    ],
)
def test_coordinates_scale_by_original_over_working_size(
    shape: tuple[int, int], factor: float, centre: tuple[float, float]
) -> None:
    """A Gaussian blob at original (x, y) lands at (x / sx, y / sy): sample 0 does not move."""
    x, y = centre
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 6.0**2)).astype(np.float32)
    small, (sx, sy) = downsample(image, factor)
    row, col = np.unravel_index(int(small.argmax()), small.shape)
    assert abs(col - x / sx) <= 0.5 + 1e-9 and abs(row - y / sy) <= 0.5 + 1e-9
    cx, cy = _centroid(small)
    assert cx == pytest.approx(x / sx, abs=0.05)
    assert cy == pytest.approx(y / sy, abs=0.05)
