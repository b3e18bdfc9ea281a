"""Precision, recall and average precision of picks against reference coordinates.

Matching, per micrograph name: picks are visited in rank order (score descending; picks
with NaN score rank last, in file order; equal scores keep file order) and each is matched
to the nearest reference of the same micrograph that is still unmatched and lies within
``radius`` (distance <= radius). A reference is matched at most once, so two picks
competing for one reference give one true positive and one false positive.

The ranking is global over all micrographs, so the curve's point n is "the n best picks
of the whole data set", i.e. a single threshold across micrographs.

Average precision is the non-interpolated sum over the ranked picks
``AP = sum_n (recall_n - recall_{n-1}) * precision_n``, i.e. the mean, over references,
of the precision at the rank where each matched reference is found (unmatched references
contribute 0). No monotone interpolation of the precision is applied.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..io.fsio import write_atomic
from ..io.picks import Picks

__all__ = ["Evaluation", "PRCurve", "evaluate", "match_picks"]

# rows of the pick-to-reference distance matrix computed at once
_CHUNK = 2048


class PRCurve(NamedTuple):
    """The precision-recall curve over ranked picks (one entry per pick, best first).

    ``thresholds[n]`` is the score of pick n (NaN for unscored picks); ``precision[n]`` and
    ``recall[n]`` are those of the picks ranked 0..n. Supports attribute access, tuple
    unpacking and ``curve["precision"]``.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return getattr(self, key)
        return tuple.__getitem__(self, key)


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`. precision/recall/f1 are for all given picks."""

    precision: float
    recall: float
    f1: float
    average_precision: float
    curve: PRCurve
    n_picks: int
    n_reference: int
    n_true_positive: int
    radius: float

    def to_csv(self, path: str | Path) -> Path:
        """Write the curve as CSV (rank, threshold, precision, recall), atomically."""
        buffer = io.StringIO()
        buffer.write("rank,threshold,precision,recall\n")
        for n, (t, p, r) in enumerate(
            zip(self.curve.thresholds, self.curve.precision, self.curve.recall, strict=True)
        ):
            buffer.write(f"{n + 1},{t:.10g},{p:.10g},{r:.10g}\n")
        return write_atomic(path, buffer.getvalue())

    def summary(self) -> dict[str, float | int]:
        """The scalar fields, for logs and JSON."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "average_precision": self.average_precision,
            "n_picks": self.n_picks,
            "n_reference": self.n_reference,
            "n_true_positive": self.n_true_positive,
            "radius": self.radius,
        }


def _rank_order(scores: np.ndarray) -> np.ndarray:
    """Indices by score descending, NaN last, ties (and NaNs) in file order."""
    key = np.where(np.isnan(scores), np.inf, -scores)
    return np.argsort(key, kind="stable")


def _match_one(px: np.ndarray, py: np.ndarray, rx: np.ndarray, ry: np.ndarray, radius: float) -> np.ndarray:
    """Greedy matching of ranked picks (px, py in rank order) to references; True where matched."""
    matched = np.zeros(px.size, dtype=bool)
    if px.size == 0 or rx.size == 0:
        return matched
    r2 = radius * radius
    # sparse list of (pick, reference, distance^2) within the radius
    pick_idx, ref_idx, dist = [], [], []
    for start in range(0, px.size, _CHUNK):
        dx = px[start : start + _CHUNK, None] - rx[None, :]
        dy = py[start : start + _CHUNK, None] - ry[None, :]
        d2 = dx * dx + dy * dy
        i, j = np.nonzero(d2 <= r2)
        pick_idx.append(i + start)
        ref_idx.append(j)
        dist.append(d2[i, j])
    pi = np.concatenate(pick_idx)
    rj = np.concatenate(ref_idx)
    d2 = np.concatenate(dist)
    if pi.size == 0:
        return matched
    # group by pick (rank order), nearest reference first, ties by reference order
    order = np.lexsort((rj, d2, pi))
    pi, rj = pi[order], rj[order]
    starts = np.flatnonzero(np.r_[True, pi[1:] != pi[:-1]])
    ends = np.r_[starts[1:], pi.size]
    taken = np.zeros(rx.size, dtype=bool)
    # loop over the picks that have a reference in range (not over pixels or all pairs)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        for j in rj[s:e].tolist():
            if not taken[j]:
                taken[j] = True
                matched[pi[s]] = True
                break
    return matched


def match_picks(picks: Picks, reference: Picks, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(rank order of picks, matched flag per ranked pick) under this module's matching rule."""
    order = _rank_order(picks.score)
    matched = np.zeros(order.size, dtype=bool)
    ranked_names = picks.micrograph[order]
    ref_groups = {name: reference.micrograph == name for name in reference.names}
    for name in dict.fromkeys(ranked_names.tolist()):
        if name not in ref_groups:
            continue
        positions = np.flatnonzero(ranked_names == name)
        sel = order[positions]
        ref = ref_groups[name]
        matched[positions] = _match_one(
            picks.x[sel], picks.y[sel], reference.x[ref], reference.y[ref], radius
        )
    return order, matched


def evaluate(picks: Picks, reference: Picks, radius: float) -> Evaluation:
    """Match ``picks`` to ``reference`` within ``radius`` px and score them (see module doc)."""
    if not radius >= 0:
        raise ValueError(f"matching radius must be >= 0, got {radius!r}")
    order, matched = match_picks(picks, reference, float(radius))
    n_picks = int(order.size)
    n_reference = len(reference)
    tp_cum = np.cumsum(matched)
    ranks = np.arange(1, n_picks + 1)
    precision_curve = tp_cum / ranks if n_picks else np.zeros(0)
    recall_curve = tp_cum / n_reference if n_reference else np.zeros(n_picks)
    n_tp = int(tp_cum[-1]) if n_picks else 0
    precision = n_tp / n_picks if n_picks else 0.0
    recall = n_tp / n_reference if n_reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    average_precision = float(np.sum(precision_curve[matched]) / n_reference) if n_reference else 0.0
    curve = PRCurve(
        picks.score[order].astype(np.float64),
        precision_curve.astype(np.float64),
        recall_curve.astype(np.float64),
    )
    return Evaluation(
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        average_precision=average_precision,
        curve=curve,
        n_picks=n_picks,
        n_reference=n_reference,
        n_true_positive=n_tp,
        radius=float(radius),
    )
