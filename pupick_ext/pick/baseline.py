"""The difference-of-Gaussians baseline run over micrograph lists, for comparison with pupick."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..io.picks import Picks
from ..prep.preprocess import prepare_one
from ..settings import ExtractSettings, MicrographEntry, PreprocessSettings
from .dog import dog_pick


def dog_extract(micrographs: Sequence[MicrographEntry], particle_diameter: float,
                preprocess: PreprocessSettings, settings: ExtractSettings = ExtractSettings(),
                progress: Callable[[int, int, str], None] | None = None) -> Picks:
    """DoG picks in original pixels; scores are standardized band-pass responses (not logits)."""
    tables = []
    for i, entry in enumerate(micrographs):
        prepared = prepare_one(entry, preprocess, particle_diameter, None)
        radius = particle_diameter / 2 / prepared.working_pixel_size if prepared.working_pixel_size else 10.0
        nms = settings.radius or max(1, int(round(radius)))
        margin = settings.edge_margin
        threshold = settings.threshold if settings.threshold is not None else -math.inf
        rows, cols, scores = dog_pick(prepared.image, radius, threshold, nms, margin, settings.max_picks)
        x, y = prepared.to_original(cols, rows)
        tables.append(Picks.for_one(entry.name, x, y, scores))
        if progress:
            progress(i + 1, len(micrographs), entry.name)
    return Picks.concat(tables)
