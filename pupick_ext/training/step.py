"""One optimisation step: a minibatch of patches, the PU objective (+ autoencoder), one Adam update."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..network.objectives import VARIANCE_FLOOR, GEBinomialObjective, Objective, binomial_log_pmf
from .forward import AEIndex
from .sampling import POSITIVE, UNLABELED
from .state import TrainState

#: unlabeled pixels per GE-binomial count: the count distribution is evaluated on groups
#: of this many pixels (the minibatch size the method was designed for), not on all of a
#: dense batch at once, whose sharp Gaussian would swamp the positive term.
GE_GROUP = 256
#: autoencoder reconstructions per step (a subsample of output locations keeps it cheap)
AUTOENCODER_SAMPLES = 64


def learning_rate_at(base: float, schedule: str, step: int, total: int) -> float:
    """``base`` for "constant"; for "cosine" half a cosine from ``base`` to 5% of it over ``total`` steps.

    A decaying rate lets the last part of a short budget settle into a minimum instead of
    hopping around it at full step size.
    """
    if schedule == "constant" or total <= 1:
        return base
    progress = min(max(step / (total - 1), 0.0), 1.0)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_learning_rate(state: TrainState, step: int, total: int) -> None:
    """The learning rate of step ``step`` of ``total`` (a pure function of the step, so resumes match)."""
    lr = learning_rate_at(state.settings.learning_rate, state.settings.lr_schedule, step, total)
    for group in state.optimizer.param_groups:
        group["lr"] = lr


def train_step(state: TrainState) -> float:
    """Sample a minibatch, take one optimizer step on it, return the loss."""
    s = state.settings
    patches, masks = state.sampler.sample(s.minibatch_size, s.positive_fraction)
    x = torch.from_numpy(patches).to(state.device)
    m = torch.from_numpy(masks).to(state.device)
    unlabeled = m == UNLABELED
    # random draws in a fixed order (the seed's stream): GE groups, then autoencoder samples
    order = ge_group_order(s.objective, int(unlabeled.sum()), state.device)
    ae_index = autoencoder_index(x, state.net.receptive_field) if state.gamma > 0 else None
    state.forward.train()
    with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=state.bf16):
        logits, recon = state.forward(x, ae_index)
    logits = logits[:, 0].float()
    loss = pu_loss(state.objective, s.objective, logits[m == POSITIVE], logits[unlabeled], order)
    if ae_index is not None:
        assert recon is not None
        loss = loss + state.gamma * autoencoder_loss(x, ae_index, recon, state.net.receptive_field)
    if state.anchor:
        loss = loss + s.anchor * anchor_penalty(state.net, state.anchor)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    return float(loss.detach())


def ge_group_order(objective_name: str, n_unlabeled: int, device: torch.device) -> torch.Tensor | None:
    """The random grouping of unlabeled outputs for GE-binomial (None: no grouping)."""
    if objective_name != "ge-binomial" or n_unlabeled < 2 * GE_GROUP:
        return None
    groups = n_unlabeled // GE_GROUP
    return torch.randperm(n_unlabeled, device=device)[: groups * GE_GROUP]


def pu_loss(objective: Objective, objective_name: str, pos: torch.Tensor, unl: torch.Tensor,
            order: torch.Tensor | None = None) -> torch.Tensor:
    """The PU objective of positive and unlabeled logits; GE-binomial over groups of ``GE_GROUP``."""
    if objective_name != "ge-binomial" or unl.numel() < 2 * GE_GROUP:
        return objective(pos, unl)
    if order is None:
        order = ge_group_order(objective_name, unl.numel(), unl.device)
    assert order is not None
    assert isinstance(objective, GEBinomialObjective)
    return ge_binomial_grouped(objective, pos, unl[order].view(-1, GE_GROUP))


def ge_binomial_grouped(objective: GEBinomialObjective, pos: torch.Tensor,
                        groups: torch.Tensor) -> torch.Tensor:
    """GE-binomial averaged over groups of unlabeled logits ``groups`` [G, n], in one pass.

    Equals ``mean_g objective(pos, groups[g])`` (the loop it replaces; same float64 counting,
    float32 result) up to float rounding: the positive term is shared and the Gaussian count
    distributions of all groups are evaluated as rows of one [G, n+1] array.
    """
    positive = F.softplus(-pos).mean() if pos.numel() else pos.sum()
    z = groups.to(torch.float32 if groups.device.type == "mps" else torch.float64)
    n = z.shape[1]
    g = torch.sigmoid(z)
    mean = g.sum(dim=1, keepdim=True)
    variance = (g * torch.sigmoid(-z)).sum(dim=1, keepdim=True).clamp_min(VARIANCE_FLOOR)
    k = torch.arange(n + 1, dtype=z.dtype, device=z.device)
    log_q = torch.log_softmax(-((k - mean) ** 2) / (2.0 * variance), dim=1)
    p = binomial_log_pmf(n, objective.pi, dtype=z.dtype, device=z.device).exp()
    cross_entropy = -(p * log_q).sum(dim=1)
    return (positive + objective.weight * cross_entropy.to(positive.dtype)).mean()


def autoencoder_index(x: torch.Tensor, receptive_field: int) -> AEIndex:
    """``AUTOENCODER_SAMPLES`` random output locations of the batch ``x`` (drawn on its device)."""
    rf = receptive_field
    b, h, w = x.shape[0], x.shape[-2] - rf + 1, x.shape[-1] - rf + 1
    idx = torch.randint(0, b * h * w, (AUTOENCODER_SAMPLES,), device=x.device)
    bi, rem = idx // (h * w), idx % (h * w)
    return bi, rem // w, rem % w


def autoencoder_loss(x: torch.Tensor, index: AEIndex, recon: torch.Tensor,
                     receptive_field: int) -> torch.Tensor:
    """Mean squared error of the reconstructions against the input crops they encode."""
    bi, yi, xi = index
    rf = receptive_field
    offsets = torch.arange(rf, device=x.device)
    rows = (yi[:, None] + offsets[None, :])[:, :, None]
    cols = (xi[:, None] + offsets[None, :])[:, None, :]
    target = x[bi[:, None, None], 0, rows, cols].reshape(len(bi), rf * rf)
    return torch.mean((recon - target) ** 2)


def anchor_penalty(net: torch.nn.Module, start: dict[str, torch.Tensor]) -> torch.Tensor:
    """Squared distance of the parameters from the start model's (L2-SP, Li et al. 2018).

    Fine-tuning on one or two micrographs otherwise forgets what the start model knew and
    these micrographs do not show (carbon, where no labelled micrograph has an edge).
    """
    params = dict(net.named_parameters())
    return torch.stack([((params[name] - w0) ** 2).sum() for name, w0 in start.items()]).sum()
