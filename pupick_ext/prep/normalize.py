"""Micrograph normalization: the two-component GMM with a per-micrograph gain (method.md),
or plain per-image standardization.

Model: x ~ 0.5 N(a mu0, (a s0)^2) + 0.5 N(a mu1, (a s1)^2) with the shared (mu, s) fit by
EM over a training set and the gain a fit per micrograph. A new micrograph is normalized
with the shared parameters after fitting only its own gain, so training and picking see
the same contrast scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: pixels drawn from each micrograph for fitting (the fit is on a subsample for speed).
SAMPLE_PIXELS = 65536
_EPS = 1e-12


@dataclass(frozen=True)
class GMMParams:
    """Shared component means and standard deviations (in gain-corrected units)."""

    mu: tuple[float, float]
    sigma: tuple[float, float]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GMMParams:
        return cls(tuple(map(float, data["mu"])), tuple(map(float, data["sigma"])))  # type: ignore[arg-type]


def sample_pixels(image: np.ndarray, rng: np.random.Generator, n: int = SAMPLE_PIXELS) -> np.ndarray:
    flat = image.reshape(-1)
    if flat.size <= n:
        return flat.astype(np.float64)
    return flat[rng.integers(0, flat.size, n)].astype(np.float64)


def _log_normal(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def _responsibilities(x: np.ndarray, gain: np.ndarray, params_mu: np.ndarray,
                      params_sigma: np.ndarray) -> np.ndarray:
    """Posterior of component 1 for samples x [K, n] with gains [K, 1] (rho = 0.5)."""
    l0 = _log_normal(x, gain * params_mu[0], gain * params_sigma[0])
    l1 = _log_normal(x, gain * params_mu[1], gain * params_sigma[1])
    return 1.0 / (1.0 + np.exp(np.clip(l0 - l1, -500, 500)))


def _update_gain(x: np.ndarray, r1: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Closed-form M-step for u = 1/a: A u^2 - B u - n = 0 per micrograph."""
    weights = (1 - r1, r1)
    a = sum((w * x**2).sum(axis=1) / sigma[z] ** 2 for z, w in enumerate(weights))
    b = sum((w * x).sum(axis=1) * mu[z] / sigma[z] ** 2 for z, w in enumerate(weights))
    n = x.shape[1]
    u = (b + np.sqrt(b**2 + 4 * a * n)) / (2 * a + _EPS)
    return (1.0 / np.maximum(u, _EPS))[:, None]


def fit_gmm(samples: np.ndarray, iterations: int = 50, tol: float = 1e-6) -> tuple[GMMParams, np.ndarray]:
    """EM fit of the shared GMM and per-micrograph gains to pixel samples [K, n].

    Gains are normalized to geometric mean 1 so the solution is identifiable.
    Returns (params, gains [K]).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    # start each gain at the micrograph's spread relative to the others (scale-equivariant)
    stds = np.maximum(x.std(axis=1), _EPS)
    gain = (stds / np.exp(np.log(stds).mean()))[:, None]
    lo, hi = np.quantile(x / gain, [0.25, 0.75])
    spread = max(float((x / gain).std()), _EPS)
    mu = np.array([lo, hi], dtype=np.float64)
    sigma = np.array([spread / 2, spread / 2])
    previous = np.inf
    for _ in range(iterations):
        r1 = _responsibilities(x, gain, mu, sigma)
        scaled = x / gain
        for z, w in enumerate((1 - r1, r1)):
            total = max(float(w.sum()), _EPS)
            mu[z] = float((w * scaled).sum() / total)
            sigma[z] = max(float(np.sqrt((w * (scaled - mu[z]) ** 2).sum() / total)), spread * 0.02)
        gain = _update_gain(x, r1, mu, sigma)
        geo = float(np.exp(np.log(gain).mean()))
        gain, mu, sigma = gain / geo, mu * geo, sigma * geo
        change = float(np.abs(mu - previous).max()) if np.isfinite(previous).all() else np.inf
        previous = mu.copy()
        if change < tol * spread:
            break
    order = np.argsort(mu)
    return GMMParams(tuple(mu[order].tolist()), tuple(sigma[order].tolist())), gain[:, 0]  # type: ignore[arg-type]


def fit_gain(samples: np.ndarray, params: GMMParams, iterations: int = 30) -> float:
    """The gain of one micrograph given shared parameters (EM on the gain alone)."""
    x = np.asarray(samples, dtype=np.float64)[None]
    mu, sigma = np.array(params.mu), np.array(params.sigma)
    gain = np.array([[max(float(np.abs(x).mean()) / max(abs(float(np.mean(mu))), _EPS), _EPS)]])
    if not np.isfinite(gain).all() or gain[0, 0] <= 0:
        gain = np.ones((1, 1))
    for _ in range(iterations):
        r1 = _responsibilities(x, gain, mu, sigma)
        new = _update_gain(x, r1, mu, sigma)
        if abs(float(new[0, 0] - gain[0, 0])) < 1e-8 * float(gain[0, 0]):
            gain = new
            break
        gain = new
    return float(gain[0, 0])


def mixture_moments(params: GMMParams) -> tuple[float, float]:
    """Mean and standard deviation of the fitted two-component mixture (rho = 0.5)."""
    mu0, mu1 = params.mu
    s0, s1 = params.sigma
    mean = 0.5 * (mu0 + mu1)
    variance = 0.5 * (s0**2 + s1**2) + 0.25 * (mu1 - mu0) ** 2
    return mean, float(np.sqrt(variance))


def gmm_normalize(image: np.ndarray, params: GMMParams, gain: float) -> np.ndarray:
    """x' = (x / a - m) / s with m, s the mixture's mean and standard deviation.

    The GMM supplies the per-micrograph gain a and a contrast scale shared by all
    micrographs; the map itself is linear. Standardizing each pixel by its own most
    likely component (the other reading of the method) is non-linear: on the demo data
    it halved particle contrast in thick-ice regions, where pixels fall in the darker
    component, and the particles there went unpicked.
    """
    mean, std = mixture_moments(params)
    return ((image.astype(np.float64) / gain - mean) / std).astype(np.float32)


def standardize(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per image."""
    x = image.astype(np.float64)
    return ((x - x.mean()) / max(float(x.std()), _EPS)).astype(np.float32)


#: 1 / Phi^-1(3/4): turns a median absolute deviation into a Gaussian standard deviation
_MAD_TO_SIGMA = 1.482602218505602


def robust_location_scale(image: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 * median absolute deviation) of an image: its ice level and noise scale.

    Both move with the image under x -> a*x + b (a > 0), and neither is pulled by carbon,
    ice chunks or beads that cover less than half of the micrograph, which the mean and
    standard deviation are.
    """
    x = np.asarray(image, dtype=np.float64).reshape(-1)
    centre = float(np.median(x))
    scale = _MAD_TO_SIGMA * float(np.median(np.abs(x - centre)))
    if not scale > 0:  # more than half the pixels equal: fall back to the standard deviation
        scale = float(x.std())
    return centre, max(scale, _EPS)


def robust_standardize(image: np.ndarray) -> np.ndarray:
    """(x - median) / robust sigma per image: the same output for x and a*x + b (a > 0)."""
    centre, scale = robust_location_scale(image)
    return ((np.asarray(image, dtype=np.float64) - centre) / scale).astype(np.float32)
