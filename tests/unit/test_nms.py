"""Peak finding / non-maximum suppression, against a brute-force greedy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pupick_ext.pick.nms import find_peaks, find_peaks_batch

torch.set_num_threads(1)


def reference_peaks(
    score: np.ndarray, radius: float, threshold: float = -math.inf, edge_margin: int = 0
) -> list[tuple[int, int, float]]:
    """Brute force, pixel by pixel: local maxima under (score desc, raster) order, then greedy."""
    m = np.where(np.isnan(score), -np.inf, score).astype(np.float64)
    h, w = m.shape
    candidates = []
    for r in range(h):
        for c in range(w):
            v = m[r, c]
            if v == -np.inf or v < threshold:
                continue
            if r < edge_margin or c < edge_margin or r >= h - edge_margin or c >= w - edge_margin:
                continue
            is_max = True
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if (dr, dc) == (0, 0) or not (0 <= rr < h and 0 <= cc < w):
                        continue
                    if m[rr, cc] > v or (m[rr, cc] == v and (rr, cc) < (r, c)):
                        is_max = False
            if is_max:
                candidates.append((-v, r, c))
    candidates.sort()
    picks: list[tuple[int, int, float]] = []
    for neg_v, r, c in candidates:
        if all((r - pr) ** 2 + (c - pc) ** 2 > radius**2 for pr, pc, _ in picks):
            picks.append((r, c, -neg_v))
    return picks


def as_list(peaks: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple[int, int, float]]:
    rows, cols, scores = peaks
    assert rows.dtype == np.int64 and cols.dtype == np.int64 and scores.dtype == np.float64
    return [(int(r), int(c), float(s)) for r, c, s in zip(rows, cols, scores, strict=True)]


def planted_map() -> np.ndarray:
    m = np.zeros((20, 20), dtype=np.float32)
    m[5, 5] = 5.0
    m[5, 8] = 4.0  # 3 px right of the best peak
    m[15, 15] = 3.0
    m[1, 1] = 6.0  # near the corner
    return m


def test_planted_peaks() -> None:
    m = planted_map()
    assert as_list(find_peaks(m, radius=2, threshold=0.5)) == [
        (1, 1, 6.0),
        (5, 5, 5.0),
        (5, 8, 4.0),
        (15, 15, 3.0),
    ]
    # radius 3: distance exactly 3 suppresses (distance <= radius), the higher score wins
    assert as_list(find_peaks(m, radius=3, threshold=0.5)) == [(1, 1, 6.0), (5, 5, 5.0), (15, 15, 3.0)]
    # (1,1) and (5,5) are 5.66 apart: (1,1) wins; (5,8), 8.06 from (1,1), is then free
    assert as_list(find_peaks(m, radius=6, threshold=0.5)) == [(1, 1, 6.0), (5, 8, 4.0), (15, 15, 3.0)]


def test_threshold_edge_margin_and_max_picks() -> None:
    m = planted_map()
    assert as_list(find_peaks(m, 2, threshold=3.5)) == [(1, 1, 6.0), (5, 5, 5.0), (5, 8, 4.0)]
    assert as_list(find_peaks(m, 2, threshold=4.0)) == [(1, 1, 6.0), (5, 5, 5.0), (5, 8, 4.0)]  # >= threshold
    assert as_list(find_peaks(m, 2, threshold=0.5, edge_margin=2)) == [
        (5, 5, 5.0),
        (5, 8, 4.0),
        (15, 15, 3.0),
    ]
    # margin 5 keeps rows/cols 5..14: (15,15) is out, (5,5) and (5,8) in
    assert as_list(find_peaks(m, 2, threshold=0.5, edge_margin=5)) == [(5, 5, 5.0), (5, 8, 4.0)]
    # an excluded edge peak does not suppress anything
    assert as_list(find_peaks(m, 6, threshold=0.5, edge_margin=2)) == [(5, 5, 5.0), (15, 15, 3.0)]
    assert as_list(find_peaks(m, 2, threshold=0.5, max_picks=2)) == [(1, 1, 6.0), (5, 5, 5.0)]
    assert as_list(find_peaks(m, 2, threshold=0.5, max_picks=0)) == []
    assert as_list(find_peaks(m, 2, edge_margin=10)) == []
    assert as_list(find_peaks(m, 2, threshold=7.0)) == []


def test_shoulders_are_not_picked() -> None:
    # a broad bump: only its top is a local maximum, however small the radius
    yy, xx = np.mgrid[0:41, 0:41]
    bump = np.exp(-((yy - 20.0) ** 2 + (xx - 17.0) ** 2) / (2 * 6.0**2))
    assert as_list(find_peaks(bump, radius=1))[:1] == [(20, 17, 1.0)]
    assert len(find_peaks(bump, radius=1, threshold=0.01)[0]) == 1


def test_plateaus_and_constant_maps_give_one_pick() -> None:
    assert as_list(find_peaks(np.zeros((30, 40)), 3)) == [(0, 0, 0.0)]
    m = np.zeros((20, 20))
    m[4:9, 6:12] = 2.0  # a flat-topped blob: first pixel in raster order represents it
    assert as_list(find_peaks(m, 3, threshold=1.0)) == [(4, 6, 2.0)]


def test_chain_of_peaks_greedy_semantics() -> None:
    # peaks 10, 9, 8 in a row, 3 px apart, radius 3.5: 10 kills 9, then 8 survives
    m = np.zeros((9, 15))
    m[4, 2], m[4, 5], m[4, 8] = 10.0, 9.0, 8.0
    assert as_list(find_peaks(m, 3.5, threshold=1.0)) == [(4, 2, 10.0), (4, 8, 8.0)]


def test_nan_scores_are_never_picked() -> None:
    m = planted_map()
    m[5, 5] = np.nan
    picks = as_list(find_peaks(m, 2, threshold=0.5))
    assert (5, 5) not in [(r, c) for r, c, _ in picks]
    assert all(math.isfinite(s) for _, _, s in picks)


def test_tensor_numpy_and_batch_agree() -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 25, 31)).astype(np.float32)
    batch = find_peaks_batch(torch.from_numpy(maps), 2.5, threshold=0.0, edge_margin=1, max_picks=15)
    assert len(batch) == 3
    for b in range(3):
        single = find_peaks(maps[b], 2.5, threshold=0.0, edge_margin=1, max_picks=15)
        assert as_list(batch[b]) == as_list(single)
        assert as_list(single) == as_list(find_peaks(torch.from_numpy(maps[b]).double(), 2.5, 0.0, 1, 15))
    with pytest.raises(ValueError):
        find_peaks(maps, 2)
    with pytest.raises(ValueError):
        find_peaks_batch(maps[0], 2)
    with pytest.raises(ValueError):
        find_peaks(maps[0], -1)


@pytest.mark.parametrize("seed", range(12))
def test_equals_brute_force_reference_on_random_maps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 30, size=2)
    if seed % 3 == 0:  # few distinct values: many ties and plateaus
        m = rng.integers(0, 4, size=(h, w)).astype(np.float64)
    elif seed % 3 == 1:  # smooth map: peaks that neighbour each other
        m = rng.normal(size=(h, w))
        m = m + np.roll(m, 1, 0) + np.roll(m, 1, 1)
    else:
        m = rng.normal(size=(h, w)).astype(np.float32)
    radius = float(rng.choice([0.0, 1.0, 1.5, 2.0, 3.0, 4.5, 7.0]))
    threshold = float(rng.choice([-np.inf, 0.0, 1.0]))
    margin = int(rng.integers(0, 3))
    expected = reference_peaks(m, radius, threshold, margin)
    got = as_list(find_peaks(m, radius, threshold=threshold, edge_margin=margin))
    assert got == [(r, c, pytest.approx(s)) for r, c, s in expected]


@settings(max_examples=50, deadline=None)
@given(
    m=arrays(
        np.float32, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.floats(-5, 5, width=32)
    ),
    radius=st.floats(0.0, 8.0),
)
def test_property_min_distance_and_maximality(m: np.ndarray, radius: float) -> None:
    rows, cols, scores = find_peaks(m, radius)
    # sorted by score, descending
    assert np.all(np.diff(scores) <= 0)
    # no two picks within the radius
    if rows.size > 1:
        d2 = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
        np.fill_diagonal(d2, np.iinfo(np.int64).max)
        assert d2.min() > radius**2
    # every pick is a local maximum (>= its 8 neighbours)
    padded = np.pad(m.astype(np.float64), 1, constant_values=-np.inf)
    for r, c, s in zip(rows, cols, scores, strict=True):
        assert s == m[r, c]
        assert s >= padded[r : r + 3, c : c + 3].max()
    # and the result is the brute-force greedy one
    assert as_list((rows, cols, scores)) == reference_peaks(m, radius)


def test_large_map_is_fast_enough() -> None:
    import time

    gen = torch.Generator().manual_seed(0)
    m = torch.nn.functional.avg_pool2d(torch.randn(1, 1, 512, 512, generator=gen), 5, 1, 2)[0, 0]
    start = time.perf_counter()
    rows, cols, _ = find_peaks(m, 8.0, threshold=0.0)
    assert time.perf_counter() - start < 5.0
    assert rows.size > 100
