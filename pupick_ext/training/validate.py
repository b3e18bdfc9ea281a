"""Scoring the held-out data: per-epoch precision/recall/AP and the threshold table.

Held-out data are whole micrographs, or a strip of every labelled micrograph (region
hold-out). Rank 0 scores; other ranks receive its numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..io.picks import Picks
from ..pick.evaluation import evaluate as evaluate_picks
from ..pick.nms import find_peaks
from ..pick.scoring import score_batch
from ..settings import ExtractSettings
from .collectives import broadcast
from .state import TrainState
from .thresholds import THRESHOLD_GRID, ThresholdRow, tabulate


def validate(state: TrainState) -> dict[str, float]:
    """Precision and recall at threshold 0 and the AP on the held-out data ({} without hold-out)."""
    names, radius = state.data.holdout_names, state.data.radius
    if not names:
        return {}
    picks, reference = heldout_picks(state, names, -math.inf)
    result = evaluate_picks(picks.above(0.0), reference, radius)
    full = evaluate_picks(picks, reference, radius)
    return {"precision": result.precision, "recall": result.recall, "ap": full.average_precision}


def threshold_table(state: TrainState) -> tuple[list[ThresholdRow], float]:
    """(threshold, picks per micrograph, held-out recall) rows and the recommended threshold.

    The recommendation maximises the held-out F1 with the precision corrected for the
    particles that carry no label (:func:`~pupick_ext.training.thresholds.pu_f1`; the share
    labelled is the labelled count over the expected count), so it balances missed
    particles against false picks on data the network did not train on. Computed on
    rank 0 and shared with the other ranks.
    """
    if state.world_size > 1:
        rows, recommended = broadcast(_threshold_table(state) if state.is_main else None)
        return [tuple(r) for r in rows], recommended
    return _threshold_table(state)


def _threshold_table(state: TrainState) -> tuple[list[ThresholdRow], float]:
    data = state.data
    names = data.holdout_names or data.train_names
    picks, reference = heldout_picks(state, names, THRESHOLD_GRID[0])
    # picks per micrograph: counts on strips are scaled up by the area they cover
    full = sum(data.by_name[n].image.size for n in names)
    seen = sum(data.by_name[n].image.shape[0] * (data.strips[n][1] - data.strips[n][0]) if data.strips
               else data.by_name[n].image.size for n in names)
    per_micrograph = full / max(seen, 1) / len(names)
    return tabulate(picks, reference, data.radius, per_micrograph, data.expected)


def heldout_picks(state: TrainState, names: Sequence[str], threshold: float) -> tuple[Picks, Picks]:
    """(picks, labelled reference) on the held-out data, working pixels: whole micrographs or strips."""
    data = state.data
    # scored as extraction scores by default, so the recommended threshold fits the picking maps
    maps = score_batch(state.net, [data.by_name[n].image for n in names], state.device,
                       symmetries=ExtractSettings.symmetries)
    picks = _picks_at(maps, names, data.radius, threshold)
    reference = Picks.concat(Picks.for_one(n, data.working_labels[n][:, 1], data.working_labels[n][:, 0])
                             for n in names)
    if data.strips:
        picks, reference = _in_strips(picks, data.strips), _in_strips(reference, data.strips)
    return picks, reference


def _picks_at(maps: Sequence[torch.Tensor], names: Sequence[str], radius: float, threshold: float) -> Picks:
    tables = []
    for name, smap in zip(names, maps, strict=True):
        rows, cols, scores = find_peaks(smap, radius=max(1, int(round(radius))), threshold=threshold,
                                        edge_margin=0)
        tables.append(Picks.for_one(name, cols, rows, scores))
    return Picks.concat(tables)


def _in_strips(picks: Picks, strips: dict[str, tuple[int, int]]) -> Picks:
    bounds = np.array([strips[n] for n in picks.micrograph], dtype=float).reshape(-1, 2)
    return picks.select((picks.x >= bounds[:, 0]) & (picks.x < bounds[:, 1]))
