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


def pu_f1(labelled_precision: float, recall: float, completeness: float) -> float:
    """F1 with the precision corrected for unlabelled particles among the held-out data.

    A pick on an unlabelled particle counts as false against the labels, so with a share
    ``completeness`` of the particles labelled the true precision is about
    ``labelled_precision / completeness`` (recall against labels is unbiased if the labelled
    particles are a fair sample). With whole micrographs labelled this is the plain F1.
    """
    precision = min(1.0, labelled_precision / completeness) if completeness > 0 else 0.0
    return 0.0 if precision + recall <= 0 else 2 * precision * recall / (precision + recall)


def recommend_threshold(thresholds: Sequence[float], f1: Sequence[float],
                        counts: Sequence[float] | None = None, expected: float | None = None) -> float:
    """The threshold of the best held-out (PU-corrected) F1.

    With incomplete labels the corrected precision saturates at 1, so F1 is often flat over
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
    """Rows over :data:`THRESHOLD_GRID` and the threshold of the best PU-corrected F1.

    ``picks`` (all candidate peaks) and ``reference`` (the labels) are on the held-out
    data; ``per_micrograph`` turns a count there into a count per micrograph, and
    ``expected`` is the expected particles per micrograph, so the share of held-out
    particles that carry a label is known (1 when whole micrographs are labelled).
    """
    completeness = float(np.clip(len(reference) * per_micrograph / max(expected, 1e-9), 1e-3, 1.0))
    rows, f1 = [], []
    for t in THRESHOLD_GRID:
        kept = picks.above(t)
        result = evaluate_picks(kept, reference, radius) if len(reference) else None
        recall = result.recall if result is not None else float("nan")
        rows.append((t, len(kept) * per_micrograph, float(recall)))
        f1.append(0.0 if result is None else pu_f1(result.precision, result.recall, completeness))
    recommended = recommend_threshold([r[0] for r in rows], f1, [r[1] for r in rows], expected)
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
