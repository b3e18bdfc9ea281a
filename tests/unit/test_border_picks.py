"""Default extraction keeps particles cut by the micrograph border (``edge_margin`` 0).

The benchmark (and real micrographs) count particles whose centre lies within a radius of
the border; a default margin of half the NMS radius lost them (AP 0.834 -> 0.847 mean over
six ASPIRE datasets when it went to 0, benchmarks/README.md "Keep picks at the border").
"""

from __future__ import annotations

import math
from pathlib import Path

import mrcfile
import numpy as np
import torch

from pupick_ext import ExtractSettings, MicrographEntry, PickerModel, PreprocessSettings, extract
from pupick_ext.network.models import build_model
from pupick_ext.pick.baseline import dog_extract
from pupick_ext.pick.nms import find_peaks
from pupick_ext.pick.scoring import prepare_engine, score_batch
from pupick_ext.prep.preprocess import prepare_one

DIAMETER = 20.0  # A, at 1 A/px: radius 10 px
LOW = -1e9  # below every logit: keep every peak


def _micrograph(path: Path, centres: list[tuple[float, float]], shape=(96, 96), seed: int = 0) -> Path:
    """Weak noise plus dark (negative-contrast) particle-sized Gaussian blobs at ``centres`` (row, col)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = 0.05 * rng.normal(size=shape)
    sigma = DIAMETER / 2 / math.sqrt(2)
    for cy, cx in centres:
        image -= np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(image.astype(np.float32))
        mrc.voxel_size = 1.0
    return path


def test_default_margin_is_zero() -> None:
    assert ExtractSettings().edge_margin == 0


def test_dog_default_keeps_a_particle_one_pixel_from_the_border(tmp_path: Path) -> None:
    entry = MicrographEntry(_micrograph(tmp_path / "m.mrc", [(1.0, 48.0), (60.0, 40.0)]))
    pre = PreprocessSettings(normalization="standard")
    default = dog_extract([entry], DIAMETER, pre, ExtractSettings(threshold=10.0))
    rows = sorted(np.round(default.y).astype(int).tolist())
    assert len(rows) == 2 and rows[0] <= 3 and abs(rows[1] - 60) <= 2
    # the same micrograph with the old margin (half the radius) loses the cut particle
    old = dog_extract([entry], DIAMETER, pre, ExtractSettings(threshold=10.0, edge_margin=5))
    assert np.round(old.y).astype(int).tolist() == [rows[1]]


def test_extract_default_equals_peaks_with_no_margin(tmp_path: Path) -> None:
    """Through the public API with a real (untrained) network: every peak of the score map,
    border ones included, is a pick; a margin only removes picks near the border."""
    torch.manual_seed(0)
    net = build_model("conv31", width=8).eval()
    info = {"architecture": "conv31", "width": 8, "pixel_size": 1.0, "downsample": 1.0,
            "particle_diameter": DIAMETER, "normalization": "standard", "gmm": None,
            "recommended_threshold": LOW, "receptive_field": 31}
    model = PickerModel(net, info)
    entry = MicrographEntry(_micrograph(tmp_path / "m.mrc", [(1.0, 30.0), (50.0, 94.0), (48.0, 48.0)],
                                        seed=1))
    picks = extract(model, [entry], ExtractSettings(threshold=LOW))

    pre = PreprocessSettings(normalization="standard")
    prepared = prepare_one(entry, pre, DIAMETER, None)
    cpu = torch.device("cpu")
    settings = ExtractSettings()
    smap = score_batch(prepare_engine(model.net, cpu), [prepared.image], cpu, tile_size=settings.tile_size,
                       symmetries=settings.symmetries)[0]
    rows, cols, _ = find_peaks(smap, radius=10, threshold=LOW, edge_margin=0)
    x, y = prepared.to_original(np.asarray(cols), np.asarray(rows))
    got = sorted(zip(np.round(picks.x, 3), np.round(picks.y, 3), strict=True))
    assert got == sorted(zip(np.round(x, 3), np.round(y, 3), strict=True))

    h, w = prepared.image.shape
    r, c = np.asarray(rows), np.asarray(cols)
    near = (r < 5) | (c < 5) | (r >= h - 5) | (c >= w - 5)
    assert near.any(), "the fixture should give at least one peak within 5 px of the border"
    margined = extract(model, [entry], ExtractSettings(threshold=LOW, edge_margin=5))
    assert len(margined.x) < len(picks.x)
