"""Positive-unlabeled training objectives, all computed from logits.

Notation (see docs/method.md): ``z`` a logit, ``g = sigmoid(z)`` the classifier's
probability, ``L(g, 1) = -log g = softplus(-z)`` and ``L(g, 0) = -log(1-g) = softplus(z)``
(cross-entropy, evaluated with softplus so that no probability is ever logged). ``pi`` is
the fraction of unlabeled samples that are positive. An objective is called as
``objective(logits_pos, logits_unl)`` with 1-D logits of the labelled positives P and of
the unlabeled samples U (any shape is flattened) and returns a scalar loss.

An empty P (or U) contributes zero to the terms that average over it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import SettingsError

__all__ = [
    "OBJECTIVES",
    "GEBinomialObjective",
    "GEKLObjective",
    "NNPUObjective",
    "Objective",
    "PNObjective",
    "autoencoder_loss",
    "binomial_log_pmf",
    "default_autoencoder_weight",
    "gaussian_log_q",
    "make_objective",
    "poisson_binomial_pmf",
]

#: Objective names accepted by :func:`make_objective`.
OBJECTIVES: tuple[str, ...] = ("pn", "ge-kl", "ge-binomial", "nnpu")

#: Probabilities are kept in [KL_EPS, 1 - KL_EPS] inside the GE-KL divergence.
KL_EPS = 1e-6
#: Floor of the Gaussian variance in GE-binomial (all predictions saturated).
VARIANCE_FLOOR = 1e-6


def _mean(values: Tensor) -> Tensor:
    """Mean that is 0 (not NaN) for an empty tensor."""
    if values.numel() == 0:
        return values.sum()
    return values.mean()


def _work_dtype(t: Tensor) -> torch.dtype:
    """float64 for the small counting computations, except where the device lacks it (MPS)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


class Objective:
    """A PU loss ``(logits_pos, logits_unl) -> scalar``; build with :func:`make_objective`."""

    name: str = ""

    def __init__(self, pi: float, weight: float = 1.0) -> None:
        self.pi = float(pi)
        self.weight = float(weight)

    def __call__(self, logits_pos: Tensor, logits_unl: Tensor) -> Tensor:
        return self.loss(logits_pos.reshape(-1), logits_unl.reshape(-1))

    def loss(self, zp: Tensor, zu: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pi={self.pi}, weight={self.weight})"


class PNObjective(Objective):
    """Positive-negative baseline: ``pi * E_P[L(g,1)] + (1-pi) * E_U[L(g,0)]`` (U taken as negative)."""

    name = "pn"

    def loss(self, zp: Tensor, zu: Tensor) -> Tensor:
        return self.pi * _mean(F.softplus(-zp)) + (1.0 - self.pi) * _mean(F.softplus(zu))


def bernoulli_kl(a: Tensor, b: float) -> Tensor:
    """KL(Bernoulli(a) || Bernoulli(b)), with ``a`` clamped to [KL_EPS, 1-KL_EPS]."""
    a = a.clamp(KL_EPS, 1.0 - KL_EPS)
    return a * torch.log(a / b) + (1.0 - a) * torch.log((1.0 - a) / (1.0 - b))


class GEKLObjective(Objective):
    """Generalized expectation with KL: ``E_P[L(g,1)] + weight * KL(E_U[g] || pi)``.

    The minibatch mean of g on U is pulled towards pi (biased as a minibatch estimate,
    which is why GE-binomial exists).
    """

    name = "ge-kl"

    def loss(self, zp: Tensor, zu: Tensor) -> Tensor:
        positive = _mean(F.softplus(-zp))
        if zu.numel() == 0:
            return positive
        return positive + self.weight * bernoulli_kl(torch.sigmoid(zu).mean(), self.pi)


def binomial_log_pmf(
    n: int, pi: float, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """log Binomial(n, pi) pmf at k = 0..n (length n+1), via lgamma; exact at pi = 0 or 1."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= pi <= 1.0:
        raise ValueError("pi must lie in [0, 1]")
    k = torch.arange(n + 1, dtype=dtype, device=device)
    nn_ = torch.tensor(float(n), dtype=dtype, device=device)
    p = torch.tensor(float(pi), dtype=dtype, device=device)
    log_choose = torch.lgamma(nn_ + 1) - torch.lgamma(k + 1) - torch.lgamma(nn_ - k + 1)
    return log_choose + torch.special.xlogy(k, p) + torch.special.xlog1py(nn_ - k, -p)


def _gaussian_log_q(mean: Tensor, variance: Tensor, n: int) -> Tensor:
    k = torch.arange(n + 1, dtype=mean.dtype, device=mean.device)
    variance = variance.clamp_min(VARIANCE_FLOOR)
    return torch.log_softmax(-((k - mean) ** 2) / (2.0 * variance), dim=0)


def gaussian_log_q(probs: Tensor) -> Tensor:
    """log q(k), k = 0..N: the CLT approximation of the number of positives among N samples.

    q is a Gaussian with mean ``sum p`` and variance ``sum p(1-p)`` (floored at
    VARIANCE_FLOOR) evaluated on the integers 0..N and normalised over them (log-softmax).
    """
    probs = probs.reshape(-1)
    return _gaussian_log_q(probs.sum(), (probs * (1.0 - probs)).sum(), probs.numel())


def poisson_binomial_pmf(probs: np.ndarray | Tensor) -> np.ndarray:
    """Exact pmf of the number of successes of independent Bernoulli(p_i), k = 0..N.

    Dynamic programming in float64, O(N^2): the reference that GE-binomial's Gaussian
    approximates (``q(k)`` of the method, summed over all labelings with k ones).
    """
    if isinstance(probs, Tensor):
        probs = probs.detach().cpu().numpy()
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    pmf = np.zeros(p.size + 1)
    pmf[0] = 1.0
    for i, pi in enumerate(p):
        # after i samples only entries 0..i are non-zero; update in place from high k down
        pmf[1 : i + 2] = pmf[1 : i + 2] * (1.0 - pi) + pmf[0 : i + 1] * pi
        pmf[0] *= 1.0 - pi
    return pmf


class GEBinomialObjective(Objective):
    """GE-binomial: ``E_P[L(g,1)] - weight * sum_k p(k) log q(k)``, k = 0..N, N = |U|.

    p = Binomial(N, pi) is the expected distribution of the number of positives in the
    unlabeled minibatch; q is the classifier's own distribution of that count, approximated
    by a Gaussian (mean ``sum g``, variance ``sum g(1-g)``) on 0..N and normalised
    (:func:`gaussian_log_q`). The cross-entropy term equals KL(p || q) up to the entropy of
    p, a constant. The counting part runs in float64 (N up to ~1e5 is a vector of N+1).
    """

    name = "ge-binomial"

    def loss(self, zp: Tensor, zu: Tensor) -> Tensor:
        positive = _mean(F.softplus(-zp))
        n = zu.numel()
        if n == 0:
            return positive
        z = zu.to(_work_dtype(zu))
        # g(1-g) as sigmoid(z) * sigmoid(-z): no cancellation when g is close to 1
        mean = torch.sigmoid(z).sum()
        variance = (torch.sigmoid(z) * torch.sigmoid(-z)).sum()
        log_q = _gaussian_log_q(mean, variance, n)
        p = binomial_log_pmf(n, self.pi, dtype=z.dtype, device=z.device).exp()
        cross_entropy = -(p * log_q).sum()
        return positive + self.weight * cross_entropy.to(positive.dtype)


class NNPUObjective(Objective):
    """Non-negative PU risk (Kiryo et al. 2017).

    Value: ``pi * E_P[L(g,1)] + max(0, R_neg)`` with ``R_neg = E_U[L(g,0)] - pi * E_P[L(g,0)]``
    (the unbiased estimate of the negative-class risk, which should never be negative).

    When ``R_neg >= -beta`` this value is minimised as is. When ``R_neg < -beta`` the model
    is overfitting U; following the paper's algorithm the step is then gradient *ascent* on
    R_neg alone: the returned tensor has the gradient of ``-gamma * R_neg`` (the positive
    term gets no gradient that step) while its value stays the nnPU risk above, so logged
    losses remain meaningful. This is done as
    ``-gamma * R_neg + (risk - (-gamma * R_neg)).detach()``. Defaults beta = 0, gamma = 1.
    """

    name = "nnpu"

    def __init__(self, pi: float, weight: float = 1.0, beta: float = 0.0, gamma: float = 1.0) -> None:
        super().__init__(pi, weight)
        self.beta = float(beta)
        self.gamma = float(gamma)

    def loss(self, zp: Tensor, zu: Tensor) -> Tensor:
        positive_risk = self.pi * _mean(F.softplus(-zp))
        negative_risk = _mean(F.softplus(zu)) - self.pi * _mean(F.softplus(zp))
        risk = positive_risk + negative_risk.clamp_min(0.0)
        ascent = -self.gamma * negative_risk
        # torch.where instead of an if: no device synchronisation; only the chosen branch
        # receives gradient
        return torch.where(negative_risk < -self.beta, ascent + (risk - ascent).detach(), risk)


_CLASSES: dict[str, type[Objective]] = {
    "pn": PNObjective,
    "ge-kl": GEKLObjective,
    "ge-binomial": GEBinomialObjective,
    "nnpu": NNPUObjective,
}


def make_objective(name: str, pi: float, weight: float = 1.0) -> Objective:
    """The objective called ``name`` ("pn", "ge-kl", "ge-binomial", "nnpu").

    ``pi`` in (0, 1) is the positive fraction of the unlabeled data; ``weight`` (>= 0) is
    lambda, the weight of the GE term (ignored by "pn" and "nnpu").
    """
    if name not in _CLASSES:
        raise SettingsError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    pi_value, weight_value = _as_float(pi), _as_float(weight)
    if not 0.0 < pi_value < 1.0:
        raise SettingsError(f"pi (the positive fraction of unlabeled data) must lie in (0, 1), got {pi!r}")
    if not (math.isfinite(weight_value) and weight_value >= 0):
        raise SettingsError(f"objective weight must be a finite number >= 0, got {weight!r}")
    return _CLASSES[name](pi_value, weight_value)


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def autoencoder_loss(x_crops: Tensor, reconstruction: Tensor) -> Tensor:
    """Mean squared error between input crops and their reconstructions (same shape)."""
    if x_crops.shape != reconstruction.shape:
        raise ValueError(f"shapes differ: {tuple(x_crops.shape)} vs {tuple(reconstruction.shape)}")
    return F.mse_loss(reconstruction, x_crops)


def default_autoencoder_weight(n_labelled: int) -> float:
    """gamma = 10/N for N <= 250 labelled particles, else 0 (it over-regularises with many)."""
    if n_labelled < 1:
        raise SettingsError("at least one labelled particle is needed")
    return 10.0 / n_labelled if n_labelled <= 250 else 0.0
