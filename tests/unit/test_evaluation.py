"""Precision / recall / average precision of picks against reference coordinates."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pupick_ext.io.picks import Picks
from pupick_ext.pick import evaluation
from pupick_ext.pick.evaluation import PRCurve, evaluate


def picks(rows: list[tuple[str, float, float, float]]) -> Picks:
    """Picks from (micrograph, x, y, score) tuples."""
    if not rows:
        return Picks()
    names, xs, ys, scores = zip(*rows, strict=True)
    return Picks(np.array(names, dtype=object), xs, ys, scores)


def refs(rows: list[tuple[str, float, float]]) -> Picks:
    return picks([(n, x, y, math.nan) for n, x, y in rows])


def brute_force(p: Picks, r: Picks, radius: float) -> tuple[list[bool], list[float]]:
    """Matching by the rule, in plain Python: (matched flag per ranked pick, ranked scores)."""
    idx = list(range(len(p)))
    idx.sort(key=lambda i: (math.isnan(p.score[i]), -p.score[i] if not math.isnan(p.score[i]) else 0.0))
    taken = [False] * len(r)
    flags = []
    for i in idx:
        best, best_d = None, None
        for j in range(len(r)):
            if taken[j] or r.micrograph[j] != p.micrograph[i]:
                continue
            d = math.hypot(p.x[i] - r.x[j], p.y[i] - r.y[j])
            if d <= radius and (best_d is None or d < best_d):
                best, best_d = j, d
        if best is not None:
            taken[best] = True
        flags.append(best is not None)
    return flags, [float(p.score[i]) for i in idx]


def ap_from_flags(flags: list[bool], n_ref: int) -> float:
    tp, ap = 0, 0.0
    for n, hit in enumerate(flags, start=1):
        if hit:
            tp += 1
            ap += (tp / n) / n_ref
    return ap


def test_hand_computed_case() -> None:
    reference = refs([("a", 10, 10), ("a", 50, 50), ("a", 90, 90)])
    given_picks = picks([("a", 11, 10, 5.0), ("a", 70, 70, 4.0), ("a", 50, 52, 3.0)])
    ev = evaluate(given_picks, reference, radius=5)
    # ranked: TP, FP, TP
    np.testing.assert_allclose(ev.curve.precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(ev.curve.recall, [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(ev.curve.thresholds, [5.0, 4.0, 3.0])
    assert ev.average_precision == pytest.approx(1 / 3 * 1.0 + 1 / 3 * 2 / 3)  # 5/9
    assert ev.precision == pytest.approx(2 / 3)
    assert ev.recall == pytest.approx(2 / 3)
    assert ev.f1 == pytest.approx(2 / 3)
    assert (ev.n_picks, ev.n_reference, ev.n_true_positive) == (3, 3, 2)


def test_radius_is_inclusive() -> None:
    reference = refs([("a", 0, 0)])
    assert evaluate(picks([("a", 3, 4, 1.0)]), reference, radius=5).n_true_positive == 1
    assert evaluate(picks([("a", 3, 4, 1.0)]), reference, radius=4.99).n_true_positive == 0


def test_two_picks_compete_for_one_reference() -> None:
    reference = refs([("a", 10, 10)])
    # the closer pick has the lower score: the higher-scored one is matched first
    given_picks = picks([("a", 11, 10, 2.0), ("a", 10, 12, 3.0)])
    ev = evaluate(given_picks, reference, radius=3)
    assert ev.n_true_positive == 1  # a reference is matched at most once
    np.testing.assert_allclose(ev.curve.thresholds, [3.0, 2.0])
    np.testing.assert_allclose(ev.curve.precision, [1.0, 0.5])
    np.testing.assert_allclose(ev.curve.recall, [1.0, 1.0])
    assert ev.average_precision == pytest.approx(1.0)
    assert ev.precision == pytest.approx(0.5)
    assert ev.recall == pytest.approx(1.0)
    assert ev.f1 == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_pick_takes_the_nearest_unmatched_reference() -> None:
    reference = refs([("a", 10, 10), ("a", 13, 10)])
    # first pick: (13,10) is nearer (1) than (10,10) (2); the second pick then finds (13,10)
    # taken and (10,10) out of range
    ev = evaluate(picks([("a", 12, 10, 5.0), ("a", 15, 10, 4.0)]), reference, radius=3)
    assert ev.n_true_positive == 1
    # a lower-ranked pick can still take the reference left over
    ev = evaluate(picks([("a", 12, 10, 5.0), ("a", 9, 10, 4.0)]), reference, radius=3)
    assert ev.n_true_positive == 2
    assert ev.average_precision == pytest.approx(1.0)


def test_matching_is_per_micrograph() -> None:
    reference = refs([("a", 10, 10), ("b", 10, 10), ("c", 30, 30)])
    # a pick on "b" at a's reference position; "c" has no picks; "d" has no reference
    given_picks = picks([("a", 10, 10, 3.0), ("d", 10, 10, 2.0), ("b", 11, 11, 1.0)])
    ev = evaluate(given_picks, reference, radius=2)
    assert ev.n_true_positive == 2
    assert ev.n_reference == 3
    np.testing.assert_allclose(ev.curve.precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(ev.curve.recall, [1 / 3, 1 / 3, 2 / 3])
    assert ev.average_precision == pytest.approx((1.0 + 2 / 3) / 3)
    assert ev.recall == pytest.approx(2 / 3)


def test_empty_picks_and_empty_reference() -> None:
    reference = refs([("a", 10, 10)])
    ev = evaluate(Picks(), reference, radius=5)
    assert ev.average_precision == 0.0
    assert (ev.precision, ev.recall, ev.f1) == (0.0, 0.0, 0.0)
    assert (ev.n_picks, ev.n_reference, ev.n_true_positive) == (0, 1, 0)
    assert ev.curve.precision.size == ev.curve.recall.size == ev.curve.thresholds.size == 0
    ev = evaluate(picks([("a", 1, 1, 1.0)]), Picks(), radius=5)
    assert (ev.precision, ev.recall, ev.average_precision, ev.n_true_positive) == (0.0, 0.0, 0.0, 0)
    ev = evaluate(Picks(), Picks(), radius=5)
    assert ev.average_precision == 0.0 and ev.n_picks == 0


def test_nan_scores_rank_last_in_file_order() -> None:
    reference = refs([("a", 0, 0), ("a", 100, 100)])
    given_picks = picks([("a", 0, 0, math.nan), ("a", 50, 50, 1.0), ("a", 100, 100, math.nan)])
    ev = evaluate(given_picks, reference, radius=2)
    np.testing.assert_allclose(ev.curve.precision, [0.0, 0.5, 2 / 3])
    assert math.isnan(ev.curve.thresholds[1]) and math.isnan(ev.curve.thresholds[2])
    assert ev.curve.thresholds[0] == 1.0
    assert ev.average_precision == pytest.approx((0.5 + 2 / 3) / 2)
    # NaN picks competing for one reference: the earlier one in the file wins
    ev = evaluate(picks([("a", 1, 0, math.nan), ("a", 0, 0, math.nan)]), refs([("a", 0, 0)]), radius=2)
    np.testing.assert_allclose(ev.curve.precision, [1.0, 0.5])


def test_curve_access_and_csv(tmp_path: Path) -> None:
    ev = evaluate(picks([("a", 11, 10, 5.0), ("a", 70, 70, 4.0)]), refs([("a", 10, 10)]), radius=5)
    assert isinstance(ev.curve, PRCurve)
    thresholds, precision, recall = ev.curve
    assert ev.curve["precision"] is precision and ev.curve[0] is thresholds
    out = tmp_path / "sub" / "pr.csv"
    assert ev.to_csv(out) == out
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["threshold"]) for r in rows] == [5.0, 4.0]
    assert [float(r["precision"]) for r in rows] == [1.0, 0.5]
    assert [float(r["recall"]) for r in rows] == [1.0, 1.0]
    assert [int(r["rank"]) for r in rows] == [1, 2]
    assert sorted(p.name for p in out.parent.iterdir()) == ["pr.csv"]  # no temp file left
    assert ev.summary()["n_true_positive"] == 1


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "_CHUNK", 7)  # exercise the chunked distance computation
    rng = np.random.default_rng(seed)
    names = ["m1", "m2", "m3"]
    n_ref, n_picks = 40, 60
    reference = Picks(
        rng.choice(names, n_ref).astype(object), rng.uniform(0, 60, n_ref), rng.uniform(0, 60, n_ref)
    )
    scores = rng.integers(0, 8, n_picks).astype(float)  # ties
    scores[rng.random(n_picks) < 0.1] = np.nan
    given_picks = Picks(
        rng.choice(names[:2] + ["m4"], n_picks).astype(object),
        rng.uniform(0, 60, n_picks),
        rng.uniform(0, 60, n_picks),
        scores,
    )
    flags, ranked_scores = brute_force(given_picks, reference, 6.0)
    ev = evaluate(given_picks, reference, radius=6.0)
    assert ev.n_true_positive == sum(flags)
    np.testing.assert_array_equal(ev.curve.thresholds, np.array(ranked_scores))
    assert ev.average_precision == pytest.approx(ap_from_flags(flags, n_ref))
    np.testing.assert_allclose(ev.curve.precision, np.cumsum(flags) / np.arange(1, n_picks + 1))


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 500), st.floats(0, 500)),
        min_size=1,
        max_size=30,
    ),
    data=st.data(),
)
def test_perfect_picks_have_ap_one(points: list[tuple[str, float, float]], data: st.DataObject) -> None:
    scores = data.draw(st.lists(st.floats(-10, 10), min_size=len(points), max_size=len(points)))
    reference = refs(points)
    given_picks = picks([(n, x, y, s) for (n, x, y), s in zip(points, scores, strict=True)])
    ev = evaluate(given_picks, reference, radius=data.draw(st.floats(0, 20)))
    assert ev.average_precision == pytest.approx(1.0)
    assert ev.precision == pytest.approx(1.0) and ev.recall == pytest.approx(1.0)
    assert ev.n_true_positive == len(points)


def test_negative_radius_is_rejected() -> None:
    with pytest.raises(ValueError):
        evaluate(Picks(), Picks(), radius=-1)
