"""GMM normalization with per-micrograph gains, and plain standardization."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pupick_ext.prep.normalize import (
    GMMParams,
    fit_gain,
    fit_gmm,
    gmm_normalize,
    robust_location_scale,
    robust_standardize,
    standardize,
)
from pupick_ext.prep.preprocess import fit_normalization, normalize_image

MU = np.array([2.0, 5.0])
SIGMA = np.array([0.5, 1.0])
GAINS = np.array([0.5, 1.0, 2.0, 1.5])


def mixture(
    gains: np.ndarray, n: int, seed: int, mu: np.ndarray = MU, sigma: np.ndarray = SIGMA
) -> np.ndarray:
    """Samples [K, n] of 0.5 N(a mu0, (a s0)^2) + 0.5 N(a mu1, (a s1)^2) with gain a per row."""
    rng = np.random.default_rng(seed)
    k = len(gains)
    second = rng.random((k, n)) < 0.5
    x = np.where(second, rng.normal(mu[1], sigma[1], (k, n)), rng.normal(mu[0], sigma[0], (k, n)))
    return x * np.asarray(gains)[:, None]


def geometric_normalized(gains: np.ndarray) -> tuple[np.ndarray, float]:
    """Gains divided by their geometric mean, and that mean (the fit's identifiability convention)."""
    geo = float(np.exp(np.log(gains).mean()))
    return gains / geo, geo


def test_fit_gmm_recovers_known_parameters() -> None:
    x = mixture(GAINS, 20000, seed=0)
    params, gains = fit_gmm(x)
    expected_gains, geo = geometric_normalized(GAINS)
    assert gains.shape == (len(GAINS),)
    assert float(np.exp(np.log(gains).mean())) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(gains, expected_gains, rtol=0.01)
    np.testing.assert_allclose(params.mu, MU * geo, rtol=0.02)
    np.testing.assert_allclose(params.sigma, SIGMA * geo, rtol=0.04)
    assert params.mu[0] < params.mu[1]  # components come back sorted by mean


def test_fit_gmm_is_scale_equivariant() -> None:
    x = mixture(GAINS, 5000, seed=1)
    p1, g1 = fit_gmm(x)
    p2, g2 = fit_gmm(x * 10.0)
    np.testing.assert_allclose(g1, g2, rtol=1e-6)
    np.testing.assert_allclose(np.array(p2.mu), 10 * np.array(p1.mu), rtol=1e-6)
    np.testing.assert_allclose(np.array(p2.sigma), 10 * np.array(p1.sigma), rtol=1e-6)


def test_fit_gmm_accepts_one_micrograph_as_1d() -> None:
    x = mixture(np.array([1.0]), 8000, seed=2)[0]
    params, gains = fit_gmm(x)
    np.testing.assert_allclose(gains, [1.0])
    np.testing.assert_allclose(params.mu, MU, rtol=0.03)


def test_fit_gain_recovers_each_micrograph_gain_given_shared_params() -> None:
    x = mixture(GAINS, 20000, seed=3)
    params, gains = fit_gmm(x)
    for k in range(len(GAINS)):
        assert fit_gain(x[k], params) == pytest.approx(gains[k], rel=1e-5)
    # and a new micrograph with a new gain, against the true parameters
    new = mixture(np.array([3.0]), 20000, seed=4)[0]
    true = GMMParams(tuple(MU), tuple(SIGMA))  # type: ignore[arg-type]
    assert fit_gain(new, true) == pytest.approx(3.0, rel=0.01)


def test_gmm_params_dict_round_trip() -> None:
    params = GMMParams((1.25, 3.5), (0.5, 0.75))
    assert GMMParams.from_dict(params.to_dict()) == params


def test_gmm_normalize_standardizes_each_component() -> None:
    x = mixture(np.array([2.0]), 40000, seed=5)[0].reshape(200, 200)
    params = GMMParams((2.0, 5.0), (0.5, 1.0))
    out = gmm_normalize(x, params, gain=2.0)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert abs(float(out.mean())) < 0.05
    assert 0.7 < float(out.std()) < 1.1
    # invariant to the gain when the gain is given: the same image at twice the gain
    np.testing.assert_allclose(gmm_normalize(2 * x, params, gain=4.0), out, atol=1e-5)


def test_standardize() -> None:
    image = np.random.default_rng(6).normal(7.0, 3.0, size=(50, 60)).astype(np.float32) * 4 + 11
    out = standardize(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert float(out.astype(np.float64).mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(out.astype(np.float64).std()) == pytest.approx(1.0, abs=1e-5)


def test_standardize_constant_image_is_finite() -> None:
    out = standardize(np.full((8, 8), 3.0, dtype=np.float32))
    assert np.isfinite(out).all()


def _images(seed: int, size: int = 300) -> list[np.ndarray]:
    """Four working images larger than the 65536-pixel subsample, so the seed matters."""
    x = mixture(GAINS, size * size, seed=seed)
    return [row.reshape(size, size).astype(np.float32) for row in x]


def test_fit_normalization_is_deterministic_with_a_seed() -> None:
    images = _images(7)
    a = fit_normalization(images, seed=3)
    b = fit_normalization(images, seed=3)
    assert a == b
    c = fit_normalization(images, seed=4)
    assert c != a  # another subsample
    np.testing.assert_allclose(c.mu, a.mu, rtol=0.02)  # ... of the same mixture
    # the mixture is fit after each image's own offset and scale are removed: every image then
    # has the shape of the gain-1 mixture, whose components land at (mu - median) / robust sigma
    centre, scale = robust_location_scale(mixture(np.ones(1), 400_000, seed=1)[0])
    np.testing.assert_allclose(a.mu, (MU - centre) / scale, atol=0.05)
    np.testing.assert_allclose(a.sigma, SIGMA / scale, rtol=0.05)


def test_normalize_image_is_deterministic_and_gain_invariant() -> None:
    images = _images(8)
    params = fit_normalization(images, seed=0)
    first = normalize_image(images[0], "gmm", params, seed=0)
    np.testing.assert_array_equal(first, normalize_image(images[0], "gmm", params, seed=0))
    # the same micrograph recorded with another gain normalizes to (nearly) the same image
    np.testing.assert_allclose(normalize_image(images[0] * 3.0, "gmm", params, seed=0), first, atol=1e-4)
    std = normalize_image(images[0], "standard", None)
    assert float(std.mean()) == pytest.approx(0.0, abs=1e-5)
    # no shared params: falls back to the robust standardization
    np.testing.assert_array_equal(normalize_image(images[0], "gmm", None), robust_standardize(images[0]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 4),
    n=st.integers(2, 400),
    base=st.floats(0.01, 1e4),
    separation=st.floats(0.0, 100.0),
    s0=st.floats(1e-3, 10.0),
    s1=st.floats(1e-3, 10.0),
    fraction=st.floats(0.05, 0.95),
    gains=st.lists(st.floats(0.1, 10.0), min_size=4, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_fit_gmm_is_finite_for_random_positive_mixtures(
    k, n, base, separation, s0, s1, fraction, gains, seed
) -> None:
    rng = np.random.default_rng(seed)
    second = rng.random((k, n)) < fraction
    x = np.where(second, rng.normal(base + separation, s1, (k, n)), rng.normal(base, s0, (k, n)))
    x = np.abs(x) * np.array(gains[:k])[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / division warnings either
        params, fitted = fit_gmm(x)
        assert np.isfinite(params.mu).all() and np.isfinite(params.sigma).all()
        assert min(params.sigma) > 0
        assert np.isfinite(fitted).all() and (fitted > 0).all()
        gain = fit_gain(x[0], params)
        assert np.isfinite(gain) and gain > 0
        assert np.isfinite(gmm_normalize(x[0], params, gain)).all()


def _counts_image(seed: int = 3, shape: tuple[int, int] = (96, 80)) -> np.ndarray:
    """Poisson electron counts around a dose of 30 with a darker 'carbon' band."""
    rng = np.random.default_rng(seed)
    dose = np.full(shape, 30.0)
    dose[:, : shape[1] // 4] *= 0.6
    return rng.poisson(dose).astype(np.float32)


@pytest.mark.parametrize("method", ["gmm", "robust", "standard"])
@settings(max_examples=25, deadline=None)
@given(log_gain=st.floats(-6.0, 6.0), offset=st.floats(-1e4, 1e4))
@example(log_gain=-4.505343529976598, offset=-4233.384859848448)  # once beyond an elementwise tolerance
@example(log_gain=-3.25, offset=4095.0)
def test_every_normalization_is_invariant_to_gain_and_offset(method: str, log_gain: float,
                                                             offset: float) -> None:
    """x and a*x + b (a > 0) reach the network as the same image, for every method."""
    image = _counts_image()
    params = fit_normalization([image, _counts_image(4)], seed=0)
    reference = normalize_image(image, method, params, seed=0)
    changed = (image.astype(np.float64) * np.exp(log_gain) + offset).astype(np.float32)
    # float32 storage of a*x + b keeps ~7 digits of the largest value: compare at that precision.
    # That rounding moves the location and scale estimates too, and a relative error of the
    # scale moves each output in proportion to its own size, hence the (1 + |reference|).
    rounding = 4e-7 * float(np.abs(changed).max()) / (np.exp(log_gain) * float(image.std()))
    tolerance = 1e-4 + rounding * (1 + np.abs(reference))
    excess = np.abs(normalize_image(changed, method, params, seed=0) - reference) - tolerance
    assert excess.max() <= 0, f"differs by up to {excess.max():.3g} more than the float32 rounding allows"


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16])
def test_integer_and_half_copies_of_counts_normalize_identically(dtype: type) -> None:
    """Counts stored as int8/int16/uint16/float16 (as cameras and converters write them) change nothing."""
    image = _counts_image()
    stored = (image - 30).astype(dtype) if dtype is np.int8 else image.astype(dtype)
    for method in ("gmm", "robust", "standard"):
        params = fit_normalization([image], seed=0)
        np.testing.assert_allclose(normalize_image(stored, method, params, seed=0),
                                   normalize_image(image, method, params, seed=0), atol=1e-5)


def test_robust_scale_is_not_pulled_by_carbon_or_ice() -> None:
    """A quarter of the image on dark carbon moves the mean and std a lot, the median and MAD little."""
    rng = np.random.default_rng(0)
    ice = rng.normal(100.0, 5.0, (200, 200))
    cluttered = ice.copy()
    cluttered[:, :50] -= 40.0  # carbon: far darker than the ice
    centre, scale = robust_location_scale(cluttered)
    mean, std = float(cluttered.mean()), float(cluttered.std())  # what plain standardization uses
    assert abs(centre - 100.0) < 0.25 * abs(mean - 100.0)
    assert abs(scale - 5.0) < 0.25 * abs(std - 5.0)
    flat = robust_standardize(cluttered)
    assert float(np.median(flat)) == pytest.approx(0.0, abs=1e-6)


def test_robust_scale_of_a_mostly_constant_image_is_finite() -> None:
    image = np.zeros((50, 50), np.float32)
    image[0, :10] = 1.0  # MAD is 0: falls back to the standard deviation
    assert np.isfinite(robust_standardize(image)).all()
    assert np.isfinite(robust_standardize(np.zeros((8, 8), np.float32))).all()
