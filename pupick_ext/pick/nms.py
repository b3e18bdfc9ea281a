"""Peak finding with non-maximum suppression on score maps.

Definition (what :func:`find_peaks` returns, and what the tests check against a brute-force
reference):

1. Priority is a total order: higher score first, ties broken by raster order (smaller row,
   then smaller column, first). NaN scores count as -inf and are never picked.
2. Candidates are the *local maxima* under that order: pixels whose priority is higher than
   that of all 8 neighbours (found with ``max_pool2d`` plus 4 shifted equality tests for
   ties), whose score is >= ``threshold`` and which lie at least ``edge_margin`` pixels from
   every border (pixels inside the margin still take part in the local-maximum test).
3. Candidates are thinned greedily in priority order: a candidate is kept unless a kept
   candidate lies within Euclidean distance ``radius`` (distance <= radius suppresses), so
   no two picks are closer than or at ``radius`` and the higher score wins.

Step 3 is the sequential greedy's result computed in parallel rounds (the lexicographically
first maximal independent set of the "within radius" graph): in each round every undecided
candidate with no undecided higher-priority neighbour is kept, and its neighbours are
dropped. Neighbour pairs come from an index map probed at the disk's offsets, so all work
is tensor operations on the map's device; there is no Python loop over pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["find_peaks", "find_peaks_batch"]

Peaks = tuple[np.ndarray, np.ndarray, np.ndarray]

# at most this many (candidate, offset) probes are materialised at once
_PROBE_CHUNK = 1 << 22


def _as_tensor(maps: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(maps)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return torch.nan_to_num(t, nan=-math.inf)


def _candidates(maps: Tensor, threshold: float, edge_margin: int) -> Tensor:
    """Boolean [B,H,W]: local maxima under (score desc, raster) order, above threshold, inside margin."""
    pooled = F.max_pool2d(maps.unsqueeze(1), kernel_size=3, stride=1, padding=1).squeeze(1)
    mask = (maps >= pooled) & (maps > -math.inf) & (maps >= threshold)
    # a tie with a neighbour that comes earlier in raster order (up-left, up, up-right, left)
    # loses priority to it
    padded = F.pad(maps, (1, 1, 1, 0), value=-math.inf)  # one column each side, one row on top
    h, w = maps.shape[-2:]
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
        earlier = padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        mask &= maps != earlier
    m = int(edge_margin)
    if m > 0:
        mask[:, :m, :] = False
        mask[:, max(h - m, 0) :, :] = False
        mask[:, :, :m] = False
        mask[:, :, max(w - m, 0) :] = False
    return mask


def _disk_offsets(radius: float, device: torch.device) -> Tensor:
    """Offsets (dy, dx) with 0 < dy^2+dx^2 <= radius^2, one of each +/- pair (dy > 0 or dy = 0 < dx)."""
    r = int(math.floor(radius))
    if r < 1:
        return torch.empty((0, 2), dtype=torch.long, device=device)
    dy, dx = torch.meshgrid(
        torch.arange(0, r + 1, device=device), torch.arange(-r, r + 1, device=device), indexing="ij"
    )
    keep = ((dy > 0) | (dx > 0)) & (dy * dy + dx * dx <= radius * radius)
    return torch.stack([dy[keep], dx[keep]], dim=1)


def _neighbour_pairs(
    rows: Tensor, cols: Tensor, shape: tuple[int, int], radius: float
) -> tuple[Tensor, Tensor]:
    """(hi, lo) index pairs of candidates within ``radius``; hi < lo (hi has the higher priority)."""
    k = rows.numel()
    device = rows.device
    offsets = _disk_offsets(radius, device)
    if k == 0 or offsets.numel() == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    h, w = shape
    index_map = torch.full((h, w), -1, dtype=torch.long, device=device)
    index_map[rows, cols] = torch.arange(k, device=device)
    step = max(1, _PROBE_CHUNK // k)
    firsts, seconds = [], []
    for start in range(0, offsets.shape[0], step):  # loop over chunks of disk offsets
        off = offsets[start : start + step]
        nr = rows[:, None] + off[None, :, 0]
        nc = cols[:, None] + off[None, :, 1]
        inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
        other = index_map[nr.clamp(0, h - 1), nc.clamp(0, w - 1)]
        hit = inside & (other >= 0)
        src = torch.arange(k, device=device)[:, None].expand_as(other)
        firsts.append(src[hit])
        seconds.append(other[hit])
    a = torch.cat(firsts)
    b = torch.cat(seconds)
    return torch.minimum(a, b), torch.maximum(a, b)


def _greedy(hi: Tensor, lo: Tensor, k: int, device: torch.device) -> Tensor:
    """Boolean keep-mask of the sequential greedy over candidates 0..k-1 (0 = top priority)."""
    undecided = torch.ones(k, dtype=torch.bool, device=device)
    kept = torch.zeros(k, dtype=torch.bool, device=device)
    while bool(undecided.any()):
        active = undecided[hi] & undecided[lo]
        blocked = torch.zeros(k, dtype=torch.bool, device=device)
        blocked[lo[active]] = True  # has an undecided neighbour of higher priority
        new = undecided & ~blocked
        kept |= new
        undecided &= ~new
        suppressed = torch.zeros(k, dtype=torch.bool, device=device)
        suppressed[lo[new[hi]]] = True
        undecided &= ~suppressed
    return kept


def _peaks_one(scores: Tensor, mask: Tensor, radius: float, max_picks: int | None) -> Peaks:
    rows, cols = torch.nonzero(mask, as_tuple=True)  # raster order
    values = scores[rows, cols]
    order = torch.sort(values, descending=True, stable=True).indices  # score desc, raster ties
    rows, cols, values = rows[order], cols[order], values[order]
    hi, lo = _neighbour_pairs(rows, cols, (int(scores.shape[0]), int(scores.shape[1])), radius)
    keep = _greedy(hi, lo, rows.numel(), rows.device)
    rows, cols, values = rows[keep], cols[keep], values[keep]
    if max_picks is not None:
        rows, cols, values = rows[:max_picks], cols[:max_picks], values[:max_picks]
    return (
        rows.cpu().numpy().astype(np.int64),
        cols.cpu().numpy().astype(np.int64),
        values.cpu().numpy().astype(np.float64),
    )


def _check(radius: float, edge_margin: int, max_picks: int | None) -> None:
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    if edge_margin < 0:
        raise ValueError(f"edge_margin must be >= 0, got {edge_margin!r}")
    if max_picks is not None and max_picks < 0:
        raise ValueError(f"max_picks must be >= 0, got {max_picks!r}")


def find_peaks_batch(
    maps: Tensor | np.ndarray,
    radius: float,
    threshold: float = -math.inf,
    edge_margin: int = 0,
    max_picks: int | None = None,
) -> list[Peaks]:
    """:func:`find_peaks` on each map of a [B,H,W] batch (candidates found for all at once)."""
    _check(radius, edge_margin, max_picks)
    t = _as_tensor(maps)
    if t.dim() != 3:
        raise ValueError(f"expected score maps [B,H,W], got shape {tuple(t.shape)}")
    with torch.no_grad():
        mask = _candidates(t, threshold, edge_margin)
        return [_peaks_one(t[b], mask[b], float(radius), max_picks) for b in range(t.shape[0])]


def find_peaks(
    score_map: Tensor | np.ndarray,
    radius: float,
    threshold: float = -math.inf,
    edge_margin: int = 0,
    max_picks: int | None = None,
) -> Peaks:
    """Picks from one score map [H,W]: ``(rows, cols, scores)`` numpy arrays, best first.

    Local maxima with score >= ``threshold`` and at least ``edge_margin`` px from the
    borders, greedily thinned so that no two lie within ``radius`` px (Euclidean; higher
    score wins, ties by raster order), at most ``max_picks`` of them. Works on the map's
    device; see the module docstring for the exact definition.
    """
    t = _as_tensor(score_map)
    if t.dim() != 2:
        raise ValueError(f"expected a score map [H,W], got shape {tuple(t.shape)}")
    return find_peaks_batch(t.unsqueeze(0), radius, threshold, edge_margin, max_picks)[0]
