"""PU objectives: values against hand computations, gradients, the Gaussian approximation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pupick_ext.errors import SettingsError
from pupick_ext.network.objectives import (
    OBJECTIVES,
    autoencoder_loss,
    binomial_log_pmf,
    default_autoencoder_weight,
    gaussian_log_q,
    make_objective,
    poisson_binomial_pmf,
)

torch.set_num_threads(1)

# --- plain-Python references (no torch) ---------------------------------------------------


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def ce_pos(z: float) -> float:
    """-log sigmoid(z)."""
    return -math.log(sig(z))


def ce_neg(z: float) -> float:
    """-log(1 - sigmoid(z))."""
    return -math.log(1.0 - sig(z))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def ref_ge_binomial(zp: list[float], zu: list[float], pi: float, weight: float) -> float:
    n = len(zu)
    g = [sig(z) for z in zu]
    mu = sum(g)
    var = sum(x * (1 - x) for x in g)
    dens = [math.exp(-((k - mu) ** 2) / (2 * var)) for k in range(n + 1)]
    total = sum(dens)
    log_q = [math.log(d / total) for d in dens]
    p = [math.comb(n, k) * pi**k * (1 - pi) ** (n - k) for k in range(n + 1)]
    return mean([ce_pos(z) for z in zp]) - weight * sum(pk * lq for pk, lq in zip(p, log_q, strict=True))


ZP = [1.5, -0.3]
ZU = [-2.0, 0.7, -0.1]


def _t(values: list[float], grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# --- values ------------------------------------------------------------------------------


def test_pn_value() -> None:
    pi = 0.2
    expected = pi * mean([ce_pos(z) for z in ZP]) + (1 - pi) * mean([ce_neg(z) for z in ZU])
    got = make_objective("pn", pi)(_t(ZP), _t(ZU))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_ge_kl_value() -> None:
    pi, weight = 0.3, 2.5
    a = mean([sig(z) for z in ZU])
    kl = a * math.log(a / pi) + (1 - a) * math.log((1 - a) / (1 - pi))
    expected = mean([ce_pos(z) for z in ZP]) + weight * kl
    got = make_objective("ge-kl", pi, weight)(_t(ZP), _t(ZU))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_ge_kl_is_zero_penalty_at_pi() -> None:
    # mean prediction on U exactly pi -> only the positive term remains
    pi = 0.25
    zu = [math.log(pi / (1 - pi))] * 4
    got = make_objective("ge-kl", pi, 10.0)(_t(ZP), _t(zu))
    assert got.item() == pytest.approx(mean([ce_pos(z) for z in ZP]), abs=1e-9)


@pytest.mark.parametrize("zu", [[0.3, -1.2], [-2.0, 0.7, -0.1], [4.0, -4.0, 0.0, 1.0, -3.0]])
def test_ge_binomial_value(zu: list[float]) -> None:
    pi, weight = 0.35, 0.7
    expected = ref_ge_binomial(ZP, zu, pi, weight)
    got = make_objective("ge-binomial", pi, weight)(_t(ZP), _t(zu))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # float32 logits give the same value to float32 precision (the count part runs in float64)
    got32 = make_objective("ge-binomial", pi, weight)(_t(ZP).float(), _t(zu).float())
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(expected, rel=1e-5)


def test_nnpu_value_when_negative_risk_is_positive() -> None:
    pi = 0.3
    pos = pi * mean([ce_pos(z) for z in ZP])
    neg = mean([ce_neg(z) for z in ZU]) - pi * mean([ce_neg(z) for z in ZP])
    assert neg > 0
    zp, zu = _t(ZP, grad=True), _t(ZU, grad=True)
    loss = make_objective("nnpu", pi)(zp, zu)
    assert loss.item() == pytest.approx(pos + neg, rel=1e-12)
    # ordinary gradient of the full risk
    loss.backward()
    n_p, n_u = len(ZP), len(ZU)
    for z, g in zip(ZP, zp.grad.tolist(), strict=True):
        expected = pi * (sig(z) - 1) / n_p - pi * sig(z) / n_p
        assert g == pytest.approx(expected, rel=1e-10)
    for z, g in zip(ZU, zu.grad.tolist(), strict=True):
        assert g == pytest.approx(sig(z) / n_u, rel=1e-10)


def test_nnpu_non_negative_correction() -> None:
    """U looks negative, P looks very positive... but P also scores high on the negative
    loss: E_U[L(g,0)] - pi * E_P[L(g,0)] < 0, the overfitting signature nnPU corrects."""
    pi = 0.5
    zp_list = [6.0, 5.0]  # confident positives: large L(g,0)
    zu_list = [-5.0, -6.0, -4.0]  # confident negatives: tiny L(g,0)
    neg = mean([ce_neg(z) for z in zu_list]) - pi * mean([ce_neg(z) for z in zp_list])
    assert neg < 0
    pos = pi * mean([ce_pos(z) for z in zp_list])
    zp, zu = _t(zp_list, grad=True), _t(zu_list, grad=True)
    loss = make_objective("nnpu", pi)(zp, zu)
    # value: the non-negative risk, max(0, neg) = 0
    assert loss.item() == pytest.approx(pos, rel=1e-12)
    # unbiased uPU risk would have been lower (negative part counted)
    assert pos + neg < loss.item()
    # gradient: ascent on the negative risk only, i.e. the gradient of -neg
    loss.backward()
    n_p, n_u = len(zp_list), len(zu_list)
    for z, g in zip(zp_list, zp.grad.tolist(), strict=True):
        assert g == pytest.approx(pi * sig(z) / n_p, rel=1e-10)  # d(-neg)/dzp = +pi g / Np
    for z, g in zip(zu_list, zu.grad.tolist(), strict=True):
        assert g == pytest.approx(-sig(z) / n_u, rel=1e-10)  # d(-neg)/dzu = -g / Nu
    # a step along -grad raises the negative risk (pushes U up / P's L(g,0) down)
    with torch.no_grad():
        zp2, zu2 = zp - 0.5 * zp.grad, zu - 0.5 * zu.grad
    neg2 = mean([ce_neg(z) for z in zu2.tolist()]) - pi * mean([ce_neg(z) for z in zp2.tolist()])
    assert neg2 > neg


def test_nnpu_beta_gamma() -> None:
    from pupick_ext.network.objectives import NNPUObjective

    zp, zu = _t([6.0, 5.0], grad=True), _t([-5.0, -6.0, -4.0], grad=True)
    loss = NNPUObjective(0.5, gamma=2.0)(zp, zu)
    loss.backward()
    assert zu.grad.tolist()[0] == pytest.approx(-2.0 * sig(-5.0) / 3, rel=1e-10)
    # with beta large enough the correction does not kick in: ordinary nnPU risk gradient
    zp, zu = _t([6.0, 5.0], grad=True), _t([-5.0, -6.0, -4.0], grad=True)
    NNPUObjective(0.5, beta=100.0)(zp, zu).backward()
    assert zu.grad.abs().max().item() == 0.0  # max(0, neg) has no gradient when neg < 0


# --- gradients and numerical stability ---------------------------------------------------


@pytest.mark.parametrize("name", OBJECTIVES)
def test_gradients_finite_and_match_finite_differences(name: str) -> None:
    objective = make_objective(name, 0.2, 1.3)
    zp, zu = _t([0.4, -1.1, 2.0], grad=True), _t([0.3, -0.8, -2.5, 1.7, 0.05], grad=True)
    assert torch.autograd.gradcheck(lambda a, b: objective(a, b), (zp, zu), eps=1e-6, atol=1e-5)
    loss = objective(zp, zu)
    loss.backward()
    assert torch.isfinite(zp.grad).all() and torch.isfinite(zu.grad).all()


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(OBJECTIVES),
    pi=st.floats(0.001, 0.999),
    zp=st.lists(st.floats(-30, 30), min_size=1, max_size=8),
    zu=st.lists(st.floats(-30, 30), min_size=2, max_size=40),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_losses_finite_for_extreme_logits(
    name: str, pi: float, zp: list[float], zu: list[float], dtype: torch.dtype
) -> None:
    a = torch.tensor(zp, dtype=dtype, requires_grad=True)
    b = torch.tensor(zu, dtype=dtype, requires_grad=True)
    loss = make_objective(name, pi)(a, b)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_ge_binomial_large_minibatch() -> None:
    torch.manual_seed(0)
    n = 100_000
    zu = (torch.randn(n) - 3.0).requires_grad_()
    zp = torch.randn(16)
    loss = make_objective("ge-binomial", 0.05)(zp, zu)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zu.grad).all()
    # the Gaussian is evaluated on 0..N
    assert gaussian_log_q(torch.sigmoid(zu.detach())).shape == (n + 1,)


def test_ge_binomial_minimised_when_mean_count_matches() -> None:
    # all U logits equal: the loss as a function of the shared logit is smallest near logit(pi)
    pi, n = 0.2, 50
    grid = torch.linspace(-4.0, 1.0, 501, dtype=torch.float64)
    objective = make_objective("ge-binomial", pi)
    values = [
        objective(torch.tensor([10.0], dtype=torch.float64), torch.full((n,), float(z))).item() for z in grid
    ]
    best = grid[int(np.argmin(values))].item()
    assert sig(best) == pytest.approx(pi, abs=0.02)


# --- helpers -----------------------------------------------------------------------------


def test_binomial_log_pmf() -> None:
    n, pi = 7, 0.3
    got = binomial_log_pmf(n, pi).exp().numpy()
    expected = [math.comb(n, k) * pi**k * (1 - pi) ** (n - k) for k in range(n + 1)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert binomial_log_pmf(100_000, 0.01).exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    # edges: pi = 0 or 1 puts all mass on k = 0 or k = n
    assert binomial_log_pmf(3, 0.0).exp().tolist() == [1.0, 0.0, 0.0, 0.0]
    assert binomial_log_pmf(3, 1.0).exp().tolist() == [0.0, 0.0, 0.0, 1.0]


def test_poisson_binomial_pmf_small_cases() -> None:
    np.testing.assert_allclose(poisson_binomial_pmf([0.5]), [0.5, 0.5])
    p1, p2 = 0.2, 0.7
    np.testing.assert_allclose(
        poisson_binomial_pmf(np.array([p1, p2])),
        [(1 - p1) * (1 - p2), p1 * (1 - p2) + (1 - p1) * p2, p1 * p2],
        rtol=1e-14,
    )
    # all probabilities equal -> binomial
    got = poisson_binomial_pmf(torch.full((9,), 0.3, dtype=torch.float64))
    np.testing.assert_allclose(got, binomial_log_pmf(9, 0.3).exp().numpy(), rtol=1e-10)
    assert poisson_binomial_pmf([]).tolist() == [1.0]


def test_gaussian_approximation_matches_exact_poisson_binomial() -> None:
    rng = np.random.default_rng(0)
    n = 50
    probs = rng.uniform(0.2, 0.8, size=n)
    exact = poisson_binomial_pmf(probs)
    log_q = gaussian_log_q(torch.tensor(probs)).numpy()
    gauss = np.exp(log_q)
    assert gauss.sum() == pytest.approx(1.0, abs=1e-12)
    tv = 0.5 * np.abs(exact - gauss).sum()
    assert tv < 0.01
    # the quantity GE-binomial uses: KL(p || q) with p the binomial prior
    for pi in (0.3, 0.5, 0.6):
        p = binomial_log_pmf(n, pi).exp().numpy()
        support = p > 1e-300
        kl_exact = float(np.sum(p[support] * (np.log(p[support]) - np.log(exact[support]))))
        kl_gauss = float(np.sum(p[support] * (np.log(p[support]) - log_q[support])))
        assert kl_gauss == pytest.approx(kl_exact, rel=0.05, abs=0.005)


def test_objective_settings_are_validated() -> None:
    with pytest.raises(SettingsError):
        make_objective("pu", 0.1)
    for bad_pi in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(SettingsError):
            make_objective("ge-binomial", bad_pi)
    with pytest.raises(SettingsError):
        make_objective("ge-kl", 0.1, weight=-1.0)
    obj = make_objective("ge-binomial", 0.1, 2.0)
    assert obj.name == "ge-binomial" and obj.pi == 0.1 and obj.weight == 2.0


def test_objectives_accept_column_logits() -> None:
    objective = make_objective("pn", 0.1)
    flat = objective(_t(ZP), _t(ZU))
    column = objective(_t(ZP).reshape(-1, 1), _t(ZU).reshape(-1, 1, 1))
    assert flat.item() == column.item()


def test_autoencoder_loss_and_default_weight() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    r = torch.tensor([[1.0, 0.0], [3.0, 5.0]])
    assert autoencoder_loss(x, r).item() == pytest.approx((0 + 4 + 0 + 1) / 4)
    with pytest.raises(ValueError):
        autoencoder_loss(x, r[:1])
    assert default_autoencoder_weight(100) == pytest.approx(0.1)
    assert default_autoencoder_weight(250) == pytest.approx(0.04)
    assert default_autoencoder_weight(251) == 0.0
    with pytest.raises(SettingsError):
        default_autoencoder_weight(0)
