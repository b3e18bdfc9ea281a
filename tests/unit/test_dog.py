"""Difference-of-Gaussians baseline picker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pupick_ext.pick.dog import dog_pick, dog_score_map, dog_sigmas
from pupick_ext.pick.nms import find_peaks


def planted(
    rng: np.random.Generator, shape: tuple[int, int], n: int, radius: float, amplitude: float, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Noise (std 1) plus ``n`` Gaussian blobs of std radius/sqrt(2), at least ``spacing`` apart."""
    centres: list[tuple[float, float]] = []
    margin = 2 * radius
    while len(centres) < n:
        c = rng.uniform(margin, np.array(shape) - margin)
        if all(math.dist(c, o) >= spacing for o in centres):
            centres.append((float(c[0]), float(c[1])))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = rng.normal(size=shape)
    sigma = radius / math.sqrt(2)
    for cy, cx in centres:
        image += amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return image.astype(np.float32), np.array(centres)


def test_sigmas() -> None:
    s1, s2 = dog_sigmas(10.0)
    assert s1 < s2
    assert s2 / s1 == pytest.approx(1.6)
    assert math.sqrt(s1 * s2) == pytest.approx(10.0 / math.sqrt(2))
    with pytest.raises(ValueError):
        dog_sigmas(0.0)


def test_finds_dark_blobs_in_noise() -> None:
    rng = np.random.default_rng(0)
    radius = 8.0
    image, centres = planted(rng, (256, 256), 12, radius, amplitude=-2.0, spacing=4 * radius)
    score = dog_score_map(image, radius)
    assert score.shape == image.shape and score.dtype == np.float32
    rows, cols, scores = find_peaks(score, radius, max_picks=12)
    found = np.stack([rows, cols], axis=1).astype(float)
    d = np.sqrt(((found[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
    # every one of the 12 best picks sits on a planted blob, and every blob is found
    assert (d.min(axis=1) <= 3.0).all()
    assert (d.min(axis=0) <= 3.0).all()


def test_bright_blobs_are_not_picked() -> None:
    rng = np.random.default_rng(1)
    radius = 6.0
    dark, centres = planted(rng, (128, 128), 4, radius, amplitude=-3.0, spacing=5 * radius)
    bright = np.zeros_like(dark)
    yy, xx = np.mgrid[0:128, 0:128]
    for cy, cx in centres:
        bright += 6.0 * np.exp(-((yy - (127 - cy)) ** 2 + (xx - (127 - cx)) ** 2) / radius**2)
    rows, cols, _ = dog_pick(dark + bright, radius, max_picks=4)
    found = np.stack([rows, cols], axis=1).astype(float)
    d = np.sqrt(((found[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
    assert (d.min(axis=1) <= 3.0).all()


def test_constant_image_and_small_images() -> None:
    flat = dog_score_map(np.full((40, 50), 3.0, dtype=np.float32), 5.0)
    assert np.isfinite(flat).all() and np.abs(flat).max() < 1e-3
    tiny = dog_score_map(np.random.default_rng(2).normal(size=(5, 7)).astype(np.float32), 10.0)
    assert tiny.shape == (5, 7) and np.isfinite(tiny).all()
    with pytest.raises(ValueError):
        dog_score_map(np.zeros((3, 4, 5), dtype=np.float32), 5.0)
