"""Fully-convolutional picker networks: receptive fields, alignment, shapes, cost."""

from __future__ import annotations

import pytest
import torch

from pupick_ext.errors import SettingsError
from pupick_ext.network.models import (
    ARCHITECTURES,
    PickerNet,
    build_model,
    input_crops,
    macs_per_pixel,
    score_map,
)

torch.set_num_threads(1)

EXPECTED_RF = {"resnet8": 71, "resnet16": 95, "conv31": 31, "conv63": 63, "conv127": 127}


def _eval_model(name: str, width: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32) -> PickerNet:
    torch.manual_seed(seed)
    model = build_model(name, width=width).to(dtype).eval()
    # non-trivial batch-norm statistics, so eval mode is not just the identity
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.1, 0.1)
    return model


def test_architecture_names_and_receptive_fields() -> None:
    assert set(ARCHITECTURES) == set(EXPECTED_RF)
    for name, rf in EXPECTED_RF.items():
        model = build_model(name, width=4)
        assert model.receptive_field == rf
        assert rf % 2 == 1
        assert model.name == name and model.width == 4
    assert build_model("resnet16", width=4).receptive_field > build_model("resnet8", width=4).receptive_field
    assert build_model().name == "resnet8"


def _changed_outputs(model: PickerNet, a: int, b: int, margin: int) -> torch.Tensor:
    """Which outputs change when input pixel (a, b) of a (RF + 2*margin)^2 image is perturbed."""
    size = model.receptive_field + 2 * margin
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, size, size, dtype=torch.float64, generator=gen)
    x2 = x.clone()
    x2[0, 0, a, b] += 25.0
    with torch.no_grad():
        y1, y2 = model(x)[0, 0], model(x2)[0, 0]
    assert y1.shape == (2 * margin + 1, 2 * margin + 1)
    # float64 convolutions compute each output from its own inputs only, so outputs that do
    # not see the pixel are bit-identical; far-edge contributions can be tiny but are not 0
    return y1 != y2


@pytest.mark.parametrize("name", list(EXPECTED_RF))
def test_receptive_field_is_exact_by_perturbation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Perturb one input pixel: exactly the outputs whose RF x RF window holds it change.

    With ReLUs some paths are dead, so the real network shows changed <= window; with the
    activations replaced by the identity (the net becomes affine and every path carries
    signal) the changed set must be the whole window, proving the field is not smaller.
    """
    model = _eval_model(name, width=6, dtype=torch.float64)
    rf = model.receptive_field
    margin = 6
    out = torch.arange(2 * margin + 1)
    for a, b in [(rf + 2, 3), (3, rf + 2), (margin + rf // 2, margin + rf // 2)]:
        rows_in = (out >= a - rf + 1) & (out <= a)  # output i sees input rows i..i+RF-1
        cols_in = (out >= b - rf + 1) & (out <= b)
        expected = rows_in[:, None] & cols_in[None, :]
        changed = _changed_outputs(model, a, b, margin)
        assert changed.any()
        assert not (changed & ~expected).any(), f"{name}: an output outside the RF window changed"
        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.functional, "relu", lambda x, inplace=False: x)
            linear_changed = _changed_outputs(model, a, b, margin)
        assert torch.equal(linear_changed, expected), f"{name}: changed outputs differ from the RF window"
    # the boundary cases were really exercised (some rows/cols in, some out)
    assert 0 < int(((out >= 3) & (out <= rf + 2)).sum()) < out.numel()


@pytest.mark.parametrize("name", ["resnet8", "conv31"])
def test_output_shape(name: str) -> None:
    model = build_model(name, width=4).eval()
    rf = model.receptive_field
    x = torch.randn(3, 1, rf + 4, rf + 9)
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
    assert logits.shape == (3, 1, 5, 10)
    assert features.shape == (3, model.feature_channels, 5, 10)
    assert torch.allclose(model.classify(features), logits)
    # an RF x RF crop gives exactly one output
    with torch.no_grad():
        assert model(torch.randn(2, 1, rf, rf)).shape == (2, 1, 1, 1)


def test_input_smaller_than_receptive_field_is_rejected() -> None:
    model = build_model("conv31", width=4)
    with pytest.raises(ValueError):
        model(torch.randn(1, 1, 30, 40))
    with pytest.raises(ValueError):
        model(torch.randn(1, 2, 40, 40))


@pytest.mark.parametrize("name", ["resnet8", "conv31"])
def test_score_map_matches_crop_classification(name: str) -> None:
    """The same weights score a crop and a whole (zero-padded) image identically."""
    model = _eval_model(name, width=6)
    rf = model.receptive_field
    r = rf // 2
    torch.manual_seed(2)
    image = torch.randn(2, 1, 21, 26)
    scores = score_map(model, image)
    assert scores.shape == (2, 21, 26)
    padded = torch.nn.functional.pad(image, (r, r, r, r))
    with torch.no_grad():
        for b, i, j in [(0, 0, 0), (0, 10, 13), (1, 20, 25), (1, 3, 24), (0, 20, 0)]:
            crop = padded[b : b + 1, :, i : i + rf, j : j + rf]
            assert crop.shape[-2:] == (rf, rf)
            # the crop is centred on input pixel (i, j)
            assert crop[0, 0, r, r] == image[b, 0, i, j]
            expected = model(crop)[0, 0, 0, 0]
            assert torch.allclose(scores[b, i, j], expected, atol=1e-5), (b, i, j)


def test_score_map_tiled_equals_untiled() -> None:
    model = _eval_model("conv31", width=4)
    torch.manual_seed(3)
    image = torch.randn(1, 1, 37, 29)
    full = score_map(model, image)
    tiled = score_map(model, image, tile_size=10)
    assert torch.allclose(full, tiled, atol=1e-5)
    assert torch.allclose(score_map(model, image[:, 0]), full)  # [B,H,W] accepted


def test_score_map_keeps_no_graph() -> None:
    model = _eval_model("conv31", width=4)
    out = score_map(model, torch.randn(1, 1, 12, 12))
    assert not out.requires_grad


def test_autoencoder_decoder_shapes_and_targets() -> None:
    torch.manual_seed(4)
    model = build_model("conv31", width=4, autoencoder=True)
    assert model.decoder is not None
    rf = model.receptive_field
    x = torch.randn(2, 1, rf + 2, rf + 3)
    features = model.features(x)
    recon = model.reconstruct(features)
    assert recon.shape == (2, 3, 4, rf, rf)
    crops = input_crops(x, rf)
    assert crops.shape == recon.shape
    assert torch.equal(crops[1, 2, 3], x[1, 0, 2 : 2 + rf, 3 : 3 + rf])
    assert torch.equal(crops[0, 0, 0], x[0, 0, :rf, :rf])
    loss = ((recon - crops) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    with pytest.raises(RuntimeError):
        build_model("conv31", width=4).reconstruct(features)


def test_macs_per_pixel() -> None:
    w = 8
    # conv31: 7x7 stem (1 -> w), five 3x3 w -> w convs, 1x1 classifier w -> 1
    assert macs_per_pixel(build_model("conv31", width=w)) == 49 * w + 5 * 9 * w * w + w
    # resnet8: stem, blocks (w,w) (w,w) (w->2w with 1x1 projection), classifier 2w -> 1
    expected = 49 * w + 4 * 9 * w * w + 9 * w * 2 * w + 9 * 4 * w * w + w * 2 * w + 2 * w
    assert macs_per_pixel(build_model("resnet8", width=w)) == expected
    # the decoder is training-only and not counted
    assert macs_per_pixel(build_model("resnet8", width=w, autoencoder=True)) == expected
    assert macs_per_pixel(build_model("resnet8", width=32)) <= 100_000


def test_bad_names_and_widths() -> None:
    with pytest.raises(SettingsError):
        build_model("resnet9")
    with pytest.raises(SettingsError):
        build_model("resnet8", width=0)


def test_state_dict_roundtrip_gives_same_scores() -> None:
    a = _eval_model("conv31", width=4, seed=5)
    b = build_model("conv31", width=4).eval()
    b.load_state_dict(a.state_dict())
    image = torch.randn(1, 1, 16, 16)
    assert torch.equal(score_map(a, image), score_map(b, image))


@pytest.mark.parametrize("name", list(EXPECTED_RF))
def test_every_pixel_of_the_field_is_seen(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No gridding holes: with linear activations, d(logit)/d(input) is non-zero at every
    pixel of the RF x RF crop (dilations keep the field contiguous)."""
    model = _eval_model(name, width=4, dtype=torch.float64)
    rf = model.receptive_field
    monkeypatch.setattr(torch.nn.functional, "relu", lambda x, inplace=False: x)
    x = torch.randn(1, 1, rf, rf, dtype=torch.float64, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None
    assert (x.grad[0, 0] != 0).all()
