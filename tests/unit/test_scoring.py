"""Scoring: the fused channels-last inference network against the plain PickerNet forward,
and the exactness that distributed extraction relies on (threads, batches, tiles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pupick_ext.network.models import ARCHITECTURES, PickerNet, build_model, score_map
from pupick_ext.pick import scoring
from pupick_ext.pick.nms import find_peaks
from pupick_ext.pick.scoring import InferenceNet, prepare_engine, score_batch, score_image

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _model(name: str = "resnet8", width: int = 8, seed: int = 0, autoencoder: bool = False) -> PickerNet:
    torch.manual_seed(seed)
    model = build_model(name, width=width, autoencoder=autoencoder).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them is tested
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.7, 1.3)
                module.bias.uniform_(-0.2, 0.2)
    return model


def _images(shapes, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


def _plain(model: PickerNet, image: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return score_map(model, torch.from_numpy(image)[None, None])[0]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_fused_network_matches_the_plain_forward(name: str) -> None:
    model = _model(name)
    image = _images([(model.receptive_field + 37, model.receptive_field + 23)])[0]
    fused = score_batch(model, [image], CPU)[0]
    plain = _plain(model, image)
    assert fused.shape == plain.shape == image.shape
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-4)


def test_fusion_leaves_the_source_network_alone() -> None:
    model = _model(autoencoder=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = InferenceNet.from_net(model)
    assert engine is not None
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in engine.parameters())


def test_training_mode_network_is_refused() -> None:
    with pytest.raises(ValueError):
        InferenceNet.from_net(build_model("conv31", width=4).train())


def test_unknown_layers_fall_back_to_the_plain_network() -> None:
    model = _model("conv31")
    model.body.append(nn.Identity())  # something the fusion does not know
    assert InferenceNet.from_net(model) is None
    image = _images([(50, 60)])[0]
    assert isinstance(prepare_engine(model, CPU), PickerNet)
    torch.testing.assert_close(score_batch(model, [image], CPU)[0], _plain(model, image), rtol=0, atol=0)


def test_bit_identical_for_any_threads_batch_and_tiles() -> None:
    """What makes N processes write the bytes one process writes."""
    model = _model("resnet8")
    images = _images([(120, 150), (120, 150), (120, 150), (97, 131)])
    torch.set_num_threads(1)
    reference = [m.clone() for m in score_batch(model, images, CPU)]
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        for subset in ([0], [1, 2], [3, 0, 2]):
            for tile in (None, 64, 100, 2048):
                maps = score_batch(model, [images[i] for i in subset], CPU, tile_size=tile)
                for i, smap in zip(subset, maps, strict=True):
                    assert torch.equal(smap, reference[i]), (threads, subset, tile)


def test_pointwise_fusion_changes_no_value() -> None:
    model = _model("resnet8")
    engine = InferenceNet.from_net(model)
    assert engine is not None
    image = torch.from_numpy(_images([(110, 140)])[0])[None]
    outs = []
    for enabled in (True, False):
        engine.set_pointwise_fusion(enabled)
        outs.append(score_batch(engine, [image[0]], CPU)[0])
    assert torch.equal(outs[0], outs[1])


def test_picks_are_those_of_the_plain_network() -> None:
    model = _model("resnet8", width=8, seed=4)
    image = _images([(180, 200)], seed=5)[0]
    fused = find_peaks(score_batch(model, [image], CPU)[0], radius=6, threshold=-np.inf, edge_margin=3)
    plain = find_peaks(_plain(model, image), radius=6, threshold=-np.inf, edge_margin=3)
    np.testing.assert_array_equal(fused[0], plain[0])
    np.testing.assert_array_equal(fused[1], plain[1])
    np.testing.assert_allclose(fused[2], plain[2], rtol=0, atol=1e-4)


def test_images_of_mixed_sizes_keep_their_order() -> None:
    model = _model("conv31")
    images = _images([(40, 50), (60, 45), (40, 50), (33, 33)])
    maps = score_batch(model, images, CPU)
    assert [tuple(m.shape) for m in maps] == [im.shape for im in images]
    for image, smap in zip(images, maps, strict=True):
        torch.testing.assert_close(smap, _plain(model, image), rtol=0, atol=1e-4)


def test_many_small_images_share_a_pass_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("conv31")
    images = _images([(40, 40)] * 7)
    calls = []
    original = scoring._forward_tiled

    def spy(engine, stack, tile_size):
        calls.append(stack.shape[0])
        return original(engine, stack, tile_size)

    monkeypatch.setattr(scoring, "_forward_tiled", spy)
    monkeypatch.setattr(scoring, "CPU_PASS_PIXELS", 3 * 40 * 40)
    maps = score_batch(model, images, CPU)
    assert calls == [3, 3, 1]
    assert len(maps) == 7


def test_score_image_is_a_numpy_map() -> None:
    model = _model("conv31")
    image = _images([(45, 52)])[0]
    out = score_image(model, image, CPU)
    assert isinstance(out, np.ndarray) and out.shape == image.shape


def test_inference_runs_without_autograd() -> None:
    model = _model("conv31")
    for p in model.parameters():
        p.requires_grad_(True)
    smap = score_batch(model, _images([(40, 40)]), CPU)[0]
    assert not smap.requires_grad


def test_scoring_leaves_the_global_random_stream_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation scores mid-training: it must not shift the training's random draws."""
    monkeypatch.setattr(scoring, "_FUSION_OK", None)  # the one-time fusion check runs again
    model = _model("conv31")
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    score_batch(model, _images([(40, 40)]), CPU)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ extract_iter's read-ahead
def _picker(tmp_path):
    from pupick_ext import PickerModel

    torch.manual_seed(2)
    net = build_model("conv31", width=4).eval()
    info = {"architecture": "conv31", "width": 4, "pixel_size": 1.25, "downsample": 1.0,
            "particle_diameter": 12.5, "normalization": "standard", "gmm": None,
            "recommended_threshold": -20.0}
    return PickerModel(net, info)


def _entries(tmp_path, mrc_tools, n: int = 5):
    from pupick_ext import MicrographEntry

    write_mrc, synthetic_micrograph = mrc_tools.write, mrc_tools.synthetic

    shapes = [(64, 80), (64, 80), (72, 72), (64, 80), (50, 90), (64, 80)]
    return [MicrographEntry(write_mrc(tmp_path / f"m{i}.mrc", synthetic_micrograph(shapes[i % 6], seed=i),
                                      1.25))
            for i in range(n)]


@pytest.mark.parametrize("workers, prefetch", [(0, True), (1, True), (0, False)])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_read_ahead_gives_the_serial_picks_in_order(tmp_path, mrc_tools, monkeypatch, workers: int,
                                                     prefetch: bool, batch_size: int) -> None:
    import pupick_ext.api as api
    from pupick_ext import ExtractSettings, extract_iter

    model, entries = _picker(tmp_path), _entries(tmp_path, mrc_tools)
    monkeypatch.setattr(api, "_PREFETCH", False)
    serial = list(extract_iter(model, entries, ExtractSettings(batch_size=1, device="cpu")))
    monkeypatch.setattr(api, "_PREFETCH", prefetch)
    got = list(extract_iter(model, entries, ExtractSettings(batch_size=batch_size, device="cpu",
                                                            num_workers=workers)))
    assert [e.name for e, _ in got] == [e.name for e in entries]
    for (_, a), (_, b) in zip(got, serial, strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.score, b.score)
    assert sum(len(p) for _, p in got) > 0


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_micrograph_is_raised_in_its_turn(tmp_path, mrc_tools, workers: int) -> None:
    from pupick_ext import ExtractSettings, InputError, extract_iter

    model, entries = _picker(tmp_path), _entries(tmp_path, mrc_tools)
    entries[3].path.write_bytes(b"garbage" * 50)
    names = []
    with pytest.raises(InputError) as err:
        settings = ExtractSettings(batch_size=2, device="cpu", num_workers=workers)
        for entry, _ in extract_iter(model, entries, settings):
            names.append(entry.name)
    assert names == [e.name for e in entries[:2]]  # the batch holding the bad one yields nothing
    assert entries[3].path.name in str(err.value)


def test_stopping_early_leaves_no_reader_behind(tmp_path, mrc_tools) -> None:
    import threading

    from pupick_ext import ExtractSettings, extract_iter

    model, entries = _picker(tmp_path), _entries(tmp_path, mrc_tools, 6)
    before = {t.name for t in threading.enumerate()}
    stream = extract_iter(model, entries, ExtractSettings(batch_size=2, device="cpu"))
    next(stream)
    stream.close()
    left = {t.name for t in threading.enumerate()} - before
    assert not any(name.startswith("pupick-prefetch") for name in left)


@pytest.mark.parametrize("symmetries, transforms", [(4, [1, 2, 3]), (8, [1, 2, 3, 4, 5, 6, 7])])
def test_symmetrized_scores_turn_with_the_micrograph(symmetries: int, transforms: list[int]) -> None:
    """Averaged over the turns (and mirrors), a turned micrograph's score map is the turned map."""
    from pupick_ext.training.sampling import dihedral

    model = _model(width=4).eval()
    image = _images([(90, 74)])[0]
    device = torch.device("cpu")
    reference = score_batch(model, [image], device, symmetries=symmetries)[0].numpy()
    for k in transforms:
        turned = score_batch(model, [dihedral(image, k)], device, symmetries=symmetries)[0].numpy()
        np.testing.assert_allclose(turned, dihedral(reference, k), atol=2e-5)
    plain = score_batch(model, [image], device)[0].numpy()
    assert np.abs(plain - reference).max() > 1e-3  # a random network is far from invariant on its own


def test_symmetries_must_be_a_subgroup_size() -> None:
    with pytest.raises(ValueError):
        score_batch(_model(width=4).eval(), _images([(80, 80)]), torch.device("cpu"), symmetries=3)
