"""The threshold table: rows of (threshold, picks per micrograph, held-out recall) and the recommendation.

One place for the table's numbers and its renderings: :func:`tabulate` computes it,
:func:`format_threshold_table` is the text of ``threshold_table.tsv`` (and what hosts
print), :func:`threshold_columns` is what the picture plots. No torch here, so readers of
the table (reports, hosts) load nothing heavy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..io.fsio import write_atomic
from ..io.picks import Picks
from ..pick.evaluation import evaluate as evaluate_picks

#: thresholds (logit scale) tabulated after training
THRESHOLD_GRID = tuple(float(t) for t in np.arange(-8.0, 8.01, 0.5))
#: the file the table is written to in a training's work directory
THRESHOLD_FILE = "threshold_table.tsv"
#: one row: (threshold, particles per micrograph, held-out recall)
ThresholdRow = tuple[float, float, float]
_HEADER = "threshold\tparticles_per_micrograph\theldout_recall\trecommended"


class ThresholdColumns(NamedTuple):
    """The table as columns, for plotting against the threshold."""

    threshold: np.ndarray
    per_micrograph: list[float]
    recall: list[float]


#: the F-beta the recommended threshold maximises: beta < 1 weighs precision above recall
RECOMMEND_BETA = 0.5
#: the completeness estimate reads the labelled precision of thresholds whose picks are at
#: least this share of the held-out labels (the most confident picks, nearly all particles)
_TOP_SHARE = 0.25


def pu_fbeta(labelled_precision: float, recall: float, completeness: float, beta: float = 1.0) -> float:
    """F-beta with the precision corrected for unlabelled particles among the held-out data.

    A pick on an unlabelled particle counts as false against the labels, so with a share
    ``completeness`` of the particles labelled the true precision is about
    ``labelled_precision / completeness`` (recall against labels is unbiased if the labelled
    particles are a fair sample). With whole micrographs labelled this is the plain F-beta.
    """
    precision = min(1.0, labelled_precision / completeness) if completeness > 0 else 0.0
    b2 = beta * beta
    return 0.0 if precision + recall <= 0 else (1 + b2) * precision * recall / (b2 * precision + recall)


def pu_f1(labelled_precision: float, recall: float, completeness: float) -> float:
    """:func:`pu_fbeta` with beta 1 (precision and recall weighed alike)."""
    return pu_fbeta(labelled_precision, recall, completeness, 1.0)


def label_completeness(labelled: int, per_micrograph: float, expected: float,
                       top_precision: float | None) -> float:
    """The share of held-out particles that carry a label, from two estimates; the larger wins.

    ``labelled * per_micrograph / expected`` is right on average, but one held-out
    micrograph may hold far fewer particles than the mean (on the ASPIRE bench 93 against a
    mean of 146), which would inflate the corrected precision. ``top_precision``, the
    labelled precision of the most confident picks, is about the completeness when those
    picks are nearly all particles, and near 1 on completely labelled micrographs.
    """
    by_count = labelled * per_micrograph / max(expected, 1e-9)
    best = max(by_count, top_precision) if top_precision is not None else by_count
    return float(np.clip(best, 1e-3, 1.0))


def recommend_threshold(thresholds: Sequence[float], f1: Sequence[float],
                        counts: Sequence[float] | None = None, expected: float | None = None) -> float:
    """The threshold of the best held-out (PU-corrected) score ``f1`` (an F1 or F-beta).

    With incomplete labels the corrected precision saturates at 1, so the score is often flat over
    a range of thresholds. Among such ties, ``counts`` (picks per micrograph at each
    threshold) and ``expected`` (particles per micrograph) choose the threshold whose count
    is nearest the expected one (by ratio). Without them, and among equal ratios, ties and a
    flat curve go to the lower threshold.
    """
    best = max(f1) if len(f1) else 0.0
    if best <= 0:
        return float(thresholds[0])
    tied = [i for i, f in enumerate(f1) if f >= best - 1e-9]
    if counts is not None and expected is not None and expected > 0:
        misfit = {i: abs(math.log(counts[i] / expected)) if counts[i] > 0 else math.inf for i in tied}
        nearest = min(misfit.values())
        tied = [i for i in tied if misfit[i] <= nearest + 1e-12]
    return float(min(thresholds[i] for i in tied))


def tabulate(picks: Picks, reference: Picks, radius: float, per_micrograph: float,
             expected: float) -> tuple[list[ThresholdRow], float]:
    """Rows over :data:`THRESHOLD_GRID` and the threshold of the best PU-corrected F-beta.

    ``picks`` (all candidate peaks) and ``reference`` (the labels) are on the held-out
    data; ``per_micrograph`` turns a count there into a count per micrograph, and
    ``expected`` is the expected particles per micrograph, one of the two estimates of the
    share of held-out particles that carry a label (:func:`label_completeness`).
    """
    rows, results = [], []
    for t in THRESHOLD_GRID:
        kept = picks.above(t)
        result = evaluate_picks(kept, reference, radius) if len(reference) else None
        recall = result.recall if result is not None else float("nan")
        rows.append((t, len(kept) * per_micrograph, float(recall)))
        results.append((len(kept), result))
    top = [r.precision for n, r in results if r is not None and n >= _TOP_SHARE * len(reference)]
    completeness = label_completeness(len(reference), per_micrograph, expected, max(top) if top else None)
    scores = [0.0 if r is None else pu_fbeta(r.precision, r.recall, completeness, RECOMMEND_BETA)
              for _, r in results]
    recommended = recommend_threshold([r[0] for r in rows], scores, [r[1] for r in rows], expected)
    return rows, float(recommended)


def format_threshold_table(table: Sequence[ThresholdRow], recommended: float) -> str:
    """The threshold table as TSV text, the recommended row marked with ``*``."""
    lines = [_HEADER]
    lines += [f"{t:g}\t{n:.1f}\t{r:.3f}\t{'*' if t == recommended else ''}" for t, n, r in table]
    return "\n".join(lines) + "\n"


def write_threshold_table(workdir: Path, table: Sequence[ThresholdRow], recommended: float) -> Path:
    """Write :data:`THRESHOLD_FILE` into ``workdir`` (atomically)."""
    path = workdir / THRESHOLD_FILE
    write_atomic(path, format_threshold_table(table, recommended))
    return path


def threshold_columns(table: Sequence[ThresholdRow]) -> ThresholdColumns:
    """The table's three columns (thresholds as an array), as the threshold picture plots them."""
    return ThresholdColumns(np.array([r[0] for r in table]), [r[1] for r in table], [r[2] for r in table])
