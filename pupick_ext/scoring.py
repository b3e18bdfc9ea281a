"""Whole-micrograph score maps: batched, tiled for large images, on CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .device import autocast
from .models import PickerNet, score_map


@torch.inference_mode()
def score_batch(net: PickerNet, images: Sequence[np.ndarray], device: torch.device,
                tile_size: int | None = None, mixed_precision: bool = True) -> list[torch.Tensor]:
    """Logit maps (on ``device``) for images of any sizes; equal-sized images share a forward pass."""
    net.eval()
    out: list[torch.Tensor | None] = [None] * len(images)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(i)  # type: ignore[arg-type]
    for indices in by_shape.values():
        stack = torch.from_numpy(np.stack([images[i] for i in indices])[:, None]).to(device, non_blocking=True)
        with autocast(device, mixed_precision):
            maps = score_map(net, stack, tile_size=tile_size).float()
        for k, i in enumerate(indices):
            out[i] = maps[k]
    return out  # type: ignore[return-value]


def score_image(net: PickerNet, image: np.ndarray, device: torch.device, tile_size: int | None = None) -> np.ndarray:
    """One logit map as a numpy array (convenience for tests and reports)."""
    return score_batch(net, [image], device, tile_size)[0].cpu().numpy()
