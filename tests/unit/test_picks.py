"""The Picks table: construction, grouping, thresholds, grid scaling, renaming, sorting."""

from __future__ import annotations

import numpy as np
import pytest

from pupick_ext import Picks


@pytest.fixture
def picks() -> Picks:
    return Picks(
        ["b", "a", "b", "a", "c"],
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [10.0, 20.0, 30.0, 40.0, 50.0],
        [0.5, np.nan, 2.0, -1.0, 0.0],
    )


def test_columns_are_float64_and_object(picks: Picks) -> None:
    assert picks.x.dtype == np.float64 and picks.y.dtype == np.float64 and picks.score.dtype == np.float64
    assert picks.micrograph.dtype == object
    assert all(isinstance(n, str) for n in picks.micrograph)
    assert len(picks) == 5


def test_empty_and_for_one() -> None:
    empty = Picks.empty()
    assert len(empty) == 0 and empty.names == []
    one = Picks.for_one("m", [1, 2], [3, 4])
    assert list(one.micrograph) == ["m", "m"]
    assert np.isnan(one.score).all()
    assert Picks.for_one("m", [], []).names == []
    scored = Picks.for_one("m", np.array([1.0]), np.array([2.0]), np.array([0.25]))
    assert scored.score.tolist() == [0.25]


def test_score_defaults_to_nan() -> None:
    p = Picks(["a", "a"], [1.0, 2.0], [3.0, 4.0])
    assert np.isnan(p.score).all() and p.score.shape == (2,)


def test_unequal_columns_are_rejected() -> None:
    with pytest.raises(ValueError):
        Picks(["a"], [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        Picks(["a", "b"], [1.0, 2.0], [1.0, 2.0], [0.5])


def test_names_groups_and_for_micrograph(picks: Picks) -> None:
    assert picks.names == ["b", "a", "c"]  # order of first appearance
    groups = dict(picks.groups())
    assert list(groups) == ["b", "a", "c"]
    np.testing.assert_array_equal(groups["a"].x, [2.0, 4.0])
    np.testing.assert_array_equal(picks.for_micrograph("b").y, [10.0, 30.0])
    assert len(picks.for_micrograph("zzz")) == 0


def test_concat(picks: Picks) -> None:
    both = Picks.concat([picks, Picks.for_one("d", [9.0], [9.0], [1.0])])
    assert len(both) == 6 and both.names == ["b", "a", "c", "d"]
    assert len(Picks.concat([])) == 0
    assert len(Picks.concat(p for _, p in picks.groups())) == 5


def test_above_keeps_nan_scores(picks: Picks) -> None:
    kept = picks.above(0.0)
    np.testing.assert_array_equal(kept.x, [1.0, 2.0, 3.0, 5.0])  # 0.5, NaN, 2.0, 0.0 (>= threshold)
    assert len(picks.above(np.inf)) == 1  # only the NaN one


def test_scaled(picks: Picks) -> None:
    doubled = picks.scaled(2.0)
    np.testing.assert_array_equal(doubled.x, picks.x * 2)
    np.testing.assert_array_equal(doubled.y, picks.y * 2)
    np.testing.assert_array_equal(doubled.score, picks.score)
    aniso = picks.scaled(2.0, 0.5)
    np.testing.assert_array_equal(aniso.x, picks.x * 2)
    np.testing.assert_array_equal(aniso.y, picks.y * 0.5)
    assert np.array_equal(picks.x, [1.0, 2.0, 3.0, 4.0, 5.0])  # immutable: original untouched


@pytest.mark.parametrize("factor", [2.0, 4.0, 8.0, 0.5, 0.25, 1024.0])
def test_power_of_two_round_trip_is_exact(factor: float) -> None:
    rng = np.random.default_rng(0)
    p = Picks.for_one("m", rng.uniform(0, 5000, 1000), rng.uniform(0, 5000, 1000))
    back = p.scaled(factor).scaled(1 / factor)
    assert np.array_equal(back.x, p.x) and np.array_equal(back.y, p.y)


@pytest.mark.parametrize("factor", [3.0, 1.7, 5.5, 1 / 3, 2.3456789])
def test_other_factor_round_trip_is_close(factor: float) -> None:
    rng = np.random.default_rng(1)
    p = Picks.for_one("m", rng.uniform(0, 5000, 1000), rng.uniform(0, 5000, 1000))
    back = p.scaled(factor).scaled(1 / factor)
    np.testing.assert_allclose(back.x, p.x, rtol=1e-12, atol=0)
    np.testing.assert_allclose(back.y, p.y, rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        p.scaled(factor, factor * 2).scaled(1 / factor, 1 / (2 * factor)).y, p.y, rtol=1e-12
    )


def test_renamed(picks: Picks) -> None:
    renamed = picks.renamed({"a": "mic_a", "c": "mic_c"})
    assert list(renamed.micrograph) == ["b", "mic_a", "b", "mic_a", "mic_c"]
    np.testing.assert_array_equal(renamed.x, picks.x)


def test_sorted_by_name_then_score_descending(picks: Picks) -> None:
    out = picks.sorted()
    assert list(out.micrograph) == ["a", "a", "b", "b", "c"]
    np.testing.assert_array_equal(out.x, [4.0, 2.0, 3.0, 1.0, 5.0])  # a: -1 before NaN; b: 2.0, 0.5


def test_select(picks: Picks) -> None:
    chosen = picks.select(np.array([True, False, False, False, True]))
    assert list(chosen.micrograph) == ["b", "c"]
    assert len(picks.select(np.array([], dtype=int))) == 0
