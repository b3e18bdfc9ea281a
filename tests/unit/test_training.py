"""The training loop's fast paths: the grouped GE-binomial, the one-module training forward
(what DistributedDataParallel wraps), determinism for a seed, and a resumed run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pupick_ext.errors import AbortRequested, SettingsError
from pupick_ext.io.picks import Picks
from pupick_ext.network.models import build_model
from pupick_ext.network.objectives import make_objective
from pupick_ext.prep.preprocess import PreparedMicrograph
from pupick_ext.settings import PreprocessSettings, TrainSettings
from pupick_ext.training.forward import TrainForward
from pupick_ext.training.loop import fit
from pupick_ext.training.run import train_model
from pupick_ext.training.sampling import IGNORE
from pupick_ext.training.state import build_state
from pupick_ext.training.step import GE_GROUP, ge_binomial_grouped, train_step
from pupick_ext.training.thresholds import (
    RECOMMEND_BETA,
    label_completeness,
    pu_f1,
    pu_fbeta,
    recommend_threshold,
    tabulate,
)
from pupick_ext.training.validate import heldout_picks


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("pi, weight", [(0.02, 1.0), (0.3, 0.5), (0.001, 2.0)])
def test_grouped_ge_binomial_equals_the_loop_over_groups(pi: float, weight: float) -> None:
    objective = make_objective("ge-binomial", pi, weight)
    gen = torch.Generator().manual_seed(0)
    pos = (torch.randn(77, generator=gen) + 2.0).requires_grad_(True)
    unl = (torch.randn(5 * GE_GROUP, generator=gen) * 3.0 - 2.0).requires_grad_(True)
    loop = torch.stack([objective(pos, chunk) for chunk in unl.view(5, GE_GROUP)]).mean()
    grads_loop = torch.autograd.grad(loop, [pos, unl])
    grouped = ge_binomial_grouped(objective, pos, unl.view(5, GE_GROUP))
    grads_grouped = torch.autograd.grad(grouped, [pos, unl])
    assert grouped.dtype == loop.dtype == torch.float32
    torch.testing.assert_close(grouped, loop, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_grouped, grads_loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


def test_grouped_ge_binomial_without_positives() -> None:
    objective = make_objective("ge-binomial", 0.05)
    unl = torch.randn(2, GE_GROUP)
    expected = torch.stack([objective(torch.empty(0), c) for c in unl]).mean()
    torch.testing.assert_close(ge_binomial_grouped(objective, torch.empty(0), unl), expected)


def test_training_forward_is_the_network_and_its_decoder() -> None:
    torch.manual_seed(0)
    net = build_model("conv31", width=4, autoencoder=True)
    module = TrainForward(net).eval()
    x = torch.randn(2, 1, 40, 44)
    bi, yi, xi = torch.tensor([0, 1, 1]), torch.tensor([0, 5, 9]), torch.tensor([3, 0, 13])
    logits, recon = module(x, (bi, yi, xi))
    with torch.no_grad():
        net_cf = build_model("conv31", width=4, autoencoder=True).eval()
        net_cf.load_state_dict(net.state_dict())
        features = net_cf.features(x)
        torch.testing.assert_close(logits, net_cf.classify(features), rtol=1e-5, atol=1e-5)
        chosen = features[bi, :, yi, xi][:, :, None, None]
        expected = net_cf.reconstruct(chosen).reshape(3, 31 * 31)
    torch.testing.assert_close(recon, expected, rtol=1e-5, atol=1e-5)
    assert module(x, None)[1] is None


def _prepared(n: int = 3, size: int = 96, seed: int = 0) -> tuple[list[PreparedMicrograph], Picks]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    prepared, tables = [], []
    for i in range(n):
        centres = rng.uniform(12, size - 12, size=(6, 2))
        image = rng.normal(size=(size, size))
        for cy, cx in centres:
            image -= 2.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
        image = ((image - image.mean()) / image.std()).astype(np.float32)
        name = f"m{i}"
        prepared.append(PreparedMicrograph(name, image, (1.0, 1.0), (size, size), 2.0))
        tables.append(Picks.for_one(name, centres[:, 1], centres[:, 0]))
    return prepared, Picks.concat(tables)


def _settings(**kw) -> TrainSettings:
    base = dict(particle_diameter=20.0, model="conv31", width=4, epochs=2, steps_per_epoch=3,
                minibatch_size=4, patch_size=16, holdout_fraction=0.34, device="cpu", seed=3, patience=5)
    base.update(kw)
    return TrainSettings(**base)


def _losses(tmp_path, name: str, steps: int = 4, **kw) -> list[float]:
    prepared, labels = _prepared()
    state = build_state(prepared, labels, _settings(**kw), PreprocessSettings(normalization="standard"),
                        tmp_path / name)
    return [train_step(state) for _ in range(steps)]


@pytest.mark.parametrize("objective", ["ge-binomial", "nnpu"])
def test_cpu_training_is_deterministic_for_a_seed(tmp_path, objective: str) -> None:
    a = _losses(tmp_path, "a", objective=objective, autoencoder=0.1)
    b = _losses(tmp_path, "b", objective=objective, autoencoder=0.1)
    assert a == b
    assert all(np.isfinite(a))
    assert _losses(tmp_path, "c", objective=objective, autoencoder=0.1, seed=4) != a


def test_ge_binomial_groups_are_used_for_large_batches(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pupick_ext.training.step as step

    calls = []
    original = step.ge_binomial_grouped

    def spy(objective, pos, groups):
        calls.append(tuple(groups.shape))
        return original(objective, pos, groups)

    monkeypatch.setattr(step, "ge_binomial_grouped", spy)
    _losses(tmp_path, "g", steps=1, patch_size=24)  # 4 patches x 24^2 outputs: > 2 groups of 256
    assert calls and calls[0][1] == GE_GROUP and calls[0][0] >= 2


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path) -> None:
    prepared, labels = _prepared()
    pre = PreprocessSettings(normalization="standard")
    full = build_state(prepared, labels, _settings(epochs=2), pre, tmp_path / "full")
    history_full, _ = fit(full)
    # stop a 2-epoch run in its second epoch, then resume it from the checkpoint of epoch 1
    part = build_state(prepared, labels, _settings(epochs=2), pre, tmp_path / "part")
    stop_after = {"steps": 0}

    def should_stop() -> bool:
        stop_after["steps"] += 1
        return stop_after["steps"] > 3  # the 3 steps of epoch 1 run, then stop in epoch 2

    with pytest.raises(AbortRequested):
        fit(part, should_stop=should_stop)
    resumed = build_state(prepared, labels, _settings(epochs=2), pre, tmp_path / "part")
    history_resumed, _ = fit(resumed)
    assert [h["loss"] for h in history_resumed] == [h["loss"] for h in history_full]
    for key, value in full.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key


def test_region_hold_out_keeps_a_strip_of_every_micrograph_for_validation(tmp_path) -> None:
    """Every micrograph trains, minus a held-out strip that validation scores."""
    prepared, labels = _prepared(n=3)
    state = build_state(prepared, labels, _settings(holdout_fraction=0.25, holdout_by="region"),
                        PreprocessSettings(normalization="standard"), tmp_path / "strip")
    data = state.data
    assert data.train_names == data.holdout_names == ["m0", "m1", "m2"]
    for name, (c0, c1) in data.strips.items():
        assert c1 - c0 == 24
        used = data.train_labels[name]
        assert not ((used[:, 1] >= c0) & (used[:, 1] < c1)).any()  # no held-out label trains
        mask = state.sampler.images[data.train_names.index(name)].mask
        assert (mask[:, c0:c1] == IGNORE).all() and (mask[:, :c0] != IGNORE).all()
    picks, reference = heldout_picks(state, data.holdout_names, -np.inf)
    bounds = np.array([data.strips[n] for n in reference.micrograph])
    assert len(reference) and ((reference.x >= bounds[:, 0]) & (reference.x < bounds[:, 1])).all()
    # "auto": whole micrographs from two labelled micrographs on, a strip of a single one
    by_micrograph = build_state(prepared, labels, _settings(), PreprocessSettings(normalization="standard"),
                                tmp_path / "mic").data
    assert not by_micrograph.strips and len(by_micrograph.holdout_names) == 1
    one = build_state(prepared[:1], labels.for_micrograph("m0"), _settings(),
                      PreprocessSettings(normalization="standard"), tmp_path / "one").data
    assert list(one.strips) == ["m0"] and one.train_names == one.holdout_names == ["m0"]


def test_pu_f1_corrects_precision_for_unlabelled_particles() -> None:
    assert pu_f1(0.8, 0.8, 1.0) == pytest.approx(0.8)
    # half the particles labelled: a labelled precision of 0.4 is a true precision of 0.8
    assert pu_f1(0.4, 0.8, 0.5) == pytest.approx(0.8)
    assert pu_f1(0.9, 0.5, 0.5) == pytest.approx(2 * 0.5 / 1.5)  # precision is capped at 1
    assert pu_f1(0.0, 0.0, 1.0) == 0.0


def test_pu_fbeta_weighs_precision_by_beta() -> None:
    # hand-computed: P 0.9, R 0.6, beta 0.5 -> 1.25 * 0.54 / (0.225 + 0.6)
    assert pu_fbeta(0.9, 0.6, 1.0, 0.5) == pytest.approx(1.25 * 0.54 / 0.825)
    assert pu_fbeta(0.45, 0.6, 0.5, 0.5) == pytest.approx(1.25 * 0.54 / 0.825)  # corrected to P 0.9
    assert pu_fbeta(0.7, 0.4, 1.0, 1.0) == pytest.approx(pu_f1(0.7, 0.4, 1.0))
    # beta < 1: of two points with the same F1, the more precise one scores higher
    assert pu_fbeta(0.9, 0.6, 1.0, 0.5) > pu_fbeta(0.6, 0.9, 1.0, 0.5)
    assert RECOMMEND_BETA < 1


def test_label_completeness_is_not_fooled_by_a_sparse_held_out_micrograph() -> None:
    # a whole micrograph labelled (93 particles) where the mean is 146: its top picks match
    # labels at 0.97, so the share labelled is about 1, not 93 / 146
    assert label_completeness(93, 1.0, 146.0, 0.97) == pytest.approx(0.97)
    # sparse labels: half of a typical micrograph; top picks match at about 0.5 too
    assert label_completeness(73, 1.0, 146.0, 0.45) == pytest.approx(0.5)
    assert label_completeness(73, 1.0, 146.0, None) == pytest.approx(0.5)
    assert label_completeness(300, 1.0, 146.0, 0.9) == 1.0  # capped
    assert label_completeness(0, 1.0, 146.0, None) == pytest.approx(1e-3)  # floored


def _table_picks(n_true: int, n_false: int, seed: int = 0):
    """Held-out labels on a line and picks: every particle (scores 0.5-4) plus false ones (scores -4-1)."""
    rng = np.random.default_rng(seed)
    xs = 100.0 * np.arange(n_true)
    reference = Picks.for_one("h", xs, np.zeros(n_true), np.full(n_true, np.nan))
    false_x = 100.0 * np.arange(n_false) + 50.0
    ys = np.concatenate([np.zeros(n_true), np.full(n_false, 500.0)])  # false picks far from every label
    scores = np.concatenate([rng.uniform(0.5, 4, n_true), rng.uniform(-4, 1, n_false)])
    picks = Picks.for_one("h", np.concatenate([xs, false_x]), ys, scores)
    return picks, reference


def test_threshold_table_recommends_a_precise_threshold_on_a_sparse_micrograph() -> None:
    """A completely labelled held-out micrograph with fewer particles than the mean: the
    recommendation must not take it for partial labels and lower the threshold."""
    picks, reference = _table_picks(60, 200)
    rows, recommended = tabulate(picks, reference, radius=10.0, per_micrograph=1.0, expected=120.0)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    kept = picks.above(recommended)
    matched = int(np.sum(kept.y == 0))
    assert matched / len(kept) >= 0.8  # precise
    assert 0.67 <= len(kept) / 60 <= 1.5  # near the true count of this micrograph


def test_recommended_threshold_is_the_best_f1_and_the_lowest_of_ties() -> None:
    assert recommend_threshold([-2.0, -1.0, 0.0, 1.0], [0.2, 0.7, 0.7, 0.1]) == -1.0
    assert recommend_threshold([-2.0, -1.0], [0.0, 0.0]) == -2.0


def test_tied_thresholds_go_to_the_count_nearest_the_expected_one() -> None:
    """Incomplete labels saturate the corrected precision: F1 ties, the expected count decides."""
    thresholds, f1 = [-2.0, -1.0, 0.0, 1.0, 2.0], [0.5, 1.0, 1.0, 1.0, 0.6]
    counts = [300.0, 120.0, 70.0, 45.0, 20.0]
    assert recommend_threshold(thresholds, f1, counts, expected=60.0) == 0.0  # 70 is nearest 60
    assert recommend_threshold(thresholds, f1, counts, expected=45.0) == 1.0
    assert recommend_threshold(thresholds, f1, counts, expected=1000.0) == -1.0  # only among the ties
    assert recommend_threshold(thresholds, f1) == -1.0  # no counts: the lowest of the ties


def _start_model(tmp_path) -> tuple:
    """(prepared, labels, preprocess, the state whose initial network is saved, the model file)."""
    from pupick_ext.network.model_io import PickerModel

    prepared, labels = _prepared()
    pre = PreprocessSettings(normalization="standard")
    first = build_state(prepared, labels, _settings(), pre, tmp_path / "a")
    info = {"architecture": "conv31", "width": 4, "autoencoder": first.net.autoencoder, "receptive_field": 31,
            "pixel_size": 2.0, "downsample": 1.0, "particle_diameter": 20.0, "normalization": "standard"}
    return prepared, labels, pre, first, PickerModel(first.net.eval(), info).save(tmp_path / "start.pupick")


def test_training_can_start_from_a_model_file_and_refuses_one_that_does_not_fit(tmp_path) -> None:
    from pupick_ext.errors import InputError
    from pupick_ext.training.initial import load_initial_weights, resolve_init

    prepared, labels, pre, first, start = _start_model(tmp_path)
    second = build_state(prepared, labels, _settings(init=str(start)), pre, tmp_path / "b")
    for key, value in first.net.state_dict().items():
        torch.testing.assert_close(second.net.state_dict()[key], value)
    with pytest.raises(InputError, match="width"):
        load_initial_weights(build_model("conv31", 8), str(start))
    # "auto" takes the shipped general model only for the architecture it was trained as
    assert resolve_init("auto", "conv31", 4) is None
    assert resolve_init(None, "resnet8", 32) is None and resolve_init("none", "resnet8", 32) is None


def test_the_shipped_general_model_loads_and_fits_the_default_network() -> None:
    from pupick_ext.network.model_io import load_model
    from pupick_ext.pretrained import GENERAL_ARCHITECTURE, pretrained_path
    from pupick_ext.training.initial import resolve_init

    path = pretrained_path("general")
    assert path is not None and path.is_file(), "pupick_ext/pretrained/general_resnet8_w32.pupick is missing"
    model = load_model(path)
    assert (model.info["architecture"], model.info["width"]) == GENERAL_ARCHITECTURE
    assert all(torch.isfinite(v).all() for v in model.net.state_dict().values() if v.is_floating_point())
    assert resolve_init("auto", *GENERAL_ARCHITECTURE) == "general"


@pytest.mark.parametrize("keep", ["last", "best"])
def test_the_model_holds_the_kept_epoch(tmp_path, keep: str) -> None:
    """keep="last" runs every epoch and keeps the final weights; keep="best" the best held-out epoch's."""
    prepared, labels = _prepared()
    pre = PreprocessSettings(normalization="standard")
    # patience 1: a "best" run may stop early; a "last" run never does
    state = build_state(prepared, labels, _settings(epochs=4, keep=keep, patience=1), pre, tmp_path / keep)
    history, best = fit(state)
    final = torch.load(tmp_path / keep / "checkpoint.pt", map_location="cpu", weights_only=False)["net"]
    expected = final if keep == "last" else best.state
    assert best.state is not None and best.epoch >= 1
    for name, value in state.net.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    if keep == "last":
        assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_keep_must_be_last_or_best() -> None:
    with pytest.raises(SettingsError, match="epoch to keep"):
        _settings(keep="middle")


def test_refit_keeps_a_network_trained_on_every_labelled_micrograph(tmp_path) -> None:
    """The held-out run measures (history, thresholds); the refit on all micrographs is what is kept."""
    prepared, labels = _prepared()
    pre = PreprocessSettings(normalization="standard")
    plain = train_model(prepared, labels, _settings(refit=False), pre, tmp_path / "plain")
    refit = train_model(prepared, labels, _settings(refit=True), pre, tmp_path / "refit")
    # the measuring run is the same run: same history and threshold table
    assert [h["loss"] for h in refit.history] == [h["loss"] for h in plain.history]
    assert refit.threshold_table == plain.threshold_table
    assert refit.recommended_threshold == plain.recommended_threshold
    assert refit.holdout == plain.holdout and len(plain.holdout) == 1
    # the kept network is the refit's last epoch, trained on all three micrographs
    final = torch.load(tmp_path / "refit" / "checkpoint_refit.pt", map_location="cpu", weights_only=False)
    for name, value in refit.model.net.state_dict().items():
        torch.testing.assert_close(value, final["net"][name])
    differs = any(not torch.equal(a, b) for a, b in zip(refit.model.net.state_dict().values(),
                                                         plain.model.net.state_dict().values(), strict=True))
    assert differs
    record = json.loads((tmp_path / "refit" / "train_settings.json").read_text())
    assert record["refit"] and len(record["refit_history"]) == 2
    assert sorted(record["model_micrographs"]) == ["m0", "m1", "m2"]
    assert record["holdout_micrographs"] == plain.holdout
    assert refit.model.info["train_settings"]["holdout_fraction"] == 0.34  # what was asked, not the refit's 0
    assert not json.loads((tmp_path / "plain" / "train_settings.json").read_text())["refit"]


@pytest.mark.parametrize("kw", [dict(keep="best"), dict(holdout_fraction=0.0)])
def test_no_refit_without_a_hold_out_or_with_the_best_epoch_kept(tmp_path, kw) -> None:
    prepared, labels = _prepared()
    train_model(prepared, labels, _settings(refit=True, **kw), PreprocessSettings(normalization="standard"),
                tmp_path)
    assert not (tmp_path / "checkpoint_refit.pt").exists()
    assert not json.loads((tmp_path / "train_settings.json").read_text())["refit"]


def test_progress_runs_once_over_both_phases_of_a_refit(tmp_path) -> None:
    prepared, labels = _prepared()
    seen: list[tuple[int, int, str]] = []
    train_model(prepared, labels, _settings(refit=True), PreprocessSettings(normalization="standard"),
                tmp_path, progress=lambda done, total, msg: seen.append((done, total, msg)))
    assert [d for d, _, _ in seen] == list(range(1, 13)) and {t for _, t, _ in seen} == {12}
    assert all(m.startswith("refit") for _, _, m in seen[6:]) and not seen[0][2].startswith("refit")


def test_precision_picks_bf16_only_where_asked_or_native(monkeypatch: pytest.MonkeyPatch) -> None:
    import pupick_ext.parallel.device as device

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert device.uses_bf16(cpu, "bf16") and not device.uses_bf16(gpu, "fp32")
    assert device.uses_bf16(gpu, "auto")
    for native in (True, False):
        monkeypatch.setattr(device, "cpu_has_native_bf16", lambda native=native: native)
        assert device.uses_bf16(cpu, "auto") is native
    with pytest.raises(SettingsError, match="precision"):
        _settings(precision="fp16")


def test_bf16_training_is_deterministic_and_not_fp32(tmp_path) -> None:
    """bf16 steps are reproducible for a seed, finite, and really run in bf16 (the losses differ)."""
    a = _losses(tmp_path, "a", precision="bf16")
    assert a == _losses(tmp_path, "b", precision="bf16")
    assert all(np.isfinite(a))
    fp32 = _losses(tmp_path, "c", precision="fp32")
    assert a != fp32
    assert np.allclose(a, fp32, rtol=0.05)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_run_record_says_which_arithmetic_the_steps_ran_in(tmp_path, precision: str) -> None:
    prepared, labels = _prepared()
    pre = PreprocessSettings(normalization="standard")
    train_model(prepared, labels, _settings(precision=precision), pre, tmp_path)
    record = json.loads((tmp_path / "train_settings.json").read_text())
    assert record["arithmetic"] == precision and record["device"] == "cpu"
    assert record["train"]["precision"] == precision


def test_the_anchor_pulls_fine_tuned_weights_towards_the_start_model(tmp_path) -> None:
    from pupick_ext.training.step import anchor_penalty

    prepared, labels, pre, first, start_file = _start_model(tmp_path)
    start = str(start_file)

    def drift(anchor: float) -> float:
        state = build_state(prepared, labels, _settings(init=start, anchor=anchor, learning_rate=0.01), pre,
                            tmp_path / f"run{anchor}")
        if anchor:
            assert float(anchor_penalty(state.net, state.anchor).detach()) == 0.0  # starts at the start model
        else:
            assert state.anchor == {}  # off: nothing kept, nothing added to the loss
        for _ in range(6):
            train_step(state)
        start_params = {k: v.detach() for k, v in first.net.named_parameters()
                        if not k.startswith("decoder.")}
        return float(anchor_penalty(state.net, start_params).detach())

    free, anchored = drift(0.0), drift(1000.0)
    assert 0 < anchored < 0.5 * free
    # without a start model there is nothing to anchor to
    assert build_state(prepared, labels, _settings(anchor=1.0), pre, tmp_path / "c").anchor == {}
