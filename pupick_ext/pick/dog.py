"""Difference-of-Gaussians (DoG) baseline picker: the classical blob detector.

Particles are dark on a lighter background (higher density scatters more), so the score is
the *negated* band-pass ``G(sigma2) * I - G(sigma1) * I`` (sigma1 < sigma2): it is high
where a dark blob of about the particle's size sits.

Choice of scales: a DoG with ratio ``k = sigma2 / sigma1`` approximates the (scale-
normalised) Laplacian of Gaussian at ``sigma = sqrt(sigma1 * sigma2)``, and the LoG's
response to a uniform disk of radius R peaks at ``sigma = R / sqrt(2)``. So we use
``sigma1 = R / sqrt(2 k)`` and ``sigma2 = k * sigma1`` with ``k = 1.6`` (Marr-Hildreth's
classical ratio), i.e. the geometric mean of the two scales is R / sqrt(2).

Gaussians are applied as products in Fourier space (numpy.fft, real FFT). The image is
reflect-padded by 3 * sigma2 first, so the FFT's periodic wrap-around does not put a
false edge at the borders. The map is standardised (median 0, unit robust spread) so that
thresholds are comparable across micrographs. Picks then come from
:func:`pupick_ext.pick.nms.find_peaks` (see :func:`dog_pick`).
"""

from __future__ import annotations

import math

import numpy as np

from .nms import find_peaks

__all__ = ["DOG_RATIO", "dog_pick", "dog_score_map", "dog_sigmas"]

#: sigma2 / sigma1 of the difference of Gaussians.
DOG_RATIO = 1.6


def dog_sigmas(radius_px: float, ratio: float = DOG_RATIO) -> tuple[float, float]:
    """(sigma1, sigma2) for particles of ``radius_px``: geometric mean radius/sqrt(2)."""
    if not radius_px > 0:
        raise ValueError(f"particle radius must be positive, got {radius_px!r}")
    sigma1 = radius_px / math.sqrt(2.0 * ratio)
    return sigma1, ratio * sigma1


def _gaussian_transfer(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Fourier transfer function of a unit-mass Gaussian of std ``sigma`` px (rfft2 layout)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2.0 * math.pi**2 * sigma**2 * (fy * fy + fx * fx))


def dog_score_map(image: np.ndarray, radius_px: float) -> np.ndarray:
    """DoG score map (float32, same shape as ``image``): high at dark blobs of ~``radius_px``."""
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {data.shape}")
    sigma1, sigma2 = dog_sigmas(radius_px)
    pad = int(math.ceil(3.0 * sigma2))
    pad_y, pad_x = min(pad, data.shape[0] - 1), min(pad, data.shape[1] - 1)
    padded = np.pad(data - data.mean(), ((pad_y, pad_y), (pad_x, pad_x)), mode="reflect")
    spectrum = np.fft.rfft2(padded)
    band = _gaussian_transfer(padded.shape, sigma2) - _gaussian_transfer(padded.shape, sigma1)
    score = np.fft.irfft2(spectrum * band, s=padded.shape)
    score = score[pad_y : pad_y + data.shape[0], pad_x : pad_x + data.shape[1]]
    # robust standardisation: median 0, MAD-based spread 1 (std if the MAD is 0); a flat
    # band-pass (constant image) stays 0 instead of amplifying rounding residue
    centre = float(np.median(score))
    spread = 1.4826 * float(np.median(np.abs(score - centre)))
    if not spread > 0:
        spread = float(score.std())
    floor = 1e-6 * float(data.std())
    if not spread > floor:
        return np.zeros(data.shape, dtype=np.float32)
    return ((score - centre) / spread).astype(np.float32)


def dog_pick(
    image: np.ndarray,
    radius_px: float,
    threshold: float = -math.inf,
    nms_radius: float | None = None,
    edge_margin: int = 0,
    max_picks: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DoG picks ``(rows, cols, scores)``, best first; NMS radius defaults to ``radius_px``."""
    scores = dog_score_map(image, radius_px)
    radius = radius_px if nms_radius is None else nms_radius
    return find_peaks(scores, radius, threshold=threshold, edge_margin=edge_margin, max_picks=max_picks)
