"""The PU training loop: sampling, objective, validation on held-out micrographs, checkpoints.

Training is deterministic for a given seed on the CPU; a checkpoint is written after
every epoch (and when a stop is requested), and a run finds and resumes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .device import autocast, resolve_device, set_threads
from .errors import AbortRequested, InputError
from .evaluation import evaluate as evaluate_picks
from .fsio import atomic_path
from .model_io import PickerModel
from .models import build_model
from .nms import find_peaks
from .objectives import (
    VARIANCE_FLOOR,
    GEBinomialObjective,
    binomial_log_pmf,
    default_autoencoder_weight,
    make_objective,
)
from .picks import Picks
from .preprocess import PreparedMicrograph
from .sampling import (
    IGNORE,
    POSITIVE,
    UNLABELED,
    PatchSampler,
    TrainingImage,
    label_mask,
    positive_fraction_pi,
)
from .scoring import score_batch
from .settings import ExtractSettings, PreprocessSettings, Progress, ShouldStop, TrainSettings

log = logging.getLogger(__name__)


#: thresholds (logit scale) tabulated after training
THRESHOLD_GRID = tuple(float(t) for t in np.arange(-8.0, 8.01, 0.5))
#: unlabeled pixels per GE-binomial count: the count distribution is evaluated on groups
#: of this many pixels (the minibatch size the method was designed for), not on all of a
#: dense batch at once, whose sharp Gaussian would swamp the positive term.
GE_GROUP = 256
#: autoencoder reconstructions per step (a subsample of output locations keeps it cheap)
AUTOENCODER_SAMPLES = 64


@dataclass
class TrainResult:
    """What training produced: the model, its file, per-epoch history and threshold help."""

    model: PickerModel
    model_path: Path
    history: list[dict[str, Any]]
    threshold_table: list[tuple[float, float, float]]
    recommended_threshold: float
    pi: float
    expected_particles: float
    holdout: list[str] = field(default_factory=list)


def resolve_init(init: str | None, architecture: str, width: int) -> str | None:
    """What training starts from: "auto" is the shipped ``general`` model when it fits, else random weights."""
    if init is None or init.strip().lower() in ("", "none", "random"):
        return None
    if init != "auto":
        return init
    from .pretrained import GENERAL_ARCHITECTURE, pretrained_path

    path = pretrained_path("general")
    if (architecture, width) == GENERAL_ARCHITECTURE and path is not None and path.exists():
        return "general"
    return None


def load_initial_weights(net: nn.Module, init: str) -> None:
    """Start ``net`` from a pretrained model: a shipped name (``general``) or a model file.

    The architecture and width must match; a decoder (autoencoder) is never taken over,
    since it is trained afresh when asked for.
    """
    from .model_io import load_model
    from .pretrained import PRETRAINED, pretrained_path

    path = pretrained_path(init) or Path(init)
    if init in PRETRAINED and not path.exists():
        raise InputError(f"the shipped starting model {init!r} is missing from this installation", path)
    start = load_model(path)
    arch, width = start.info.get("architecture"), start.info.get("width")
    if (arch, width) != (net.name, net.width):
        raise InputError(f"starting model is {arch} width {width}, but training asks for {net.name} width "
                         f"{net.width}; choose the same --model and --width or another --init", path)
    weights = {k: v for k, v in start.net.state_dict().items() if not k.startswith("decoder.")}
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if unexpected or any(not k.startswith("decoder.") for k in missing):
        raise InputError("starting model's weights do not fit the network", path)
    log.info("starting from %s (%s)", init, path)


def learning_rate_at(base: float, schedule: str, step: int, total: int) -> float:
    """``base`` for "constant"; for "cosine" half a cosine from ``base`` down to 5% of it over ``total`` steps.

    A decaying rate lets the last part of a short budget settle into a minimum instead of
    hopping around it at full step size.
    """
    if schedule == "constant" or total <= 1:
        return base
    progress = min(max(step / (total - 1), 0.0), 1.0)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def pu_f1(labelled_precision: float, recall: float, completeness: float) -> float:
    """F1 with the precision corrected for unlabelled particles among the held-out data.

    A pick on an unlabelled particle counts as false against the labels, so with a share
    ``completeness`` of the particles labelled the true precision is about
    ``labelled_precision / completeness`` (recall against labels is unbiased if the labelled
    particles are a fair sample). With whole micrographs labelled this is the plain F1.
    """
    precision = min(1.0, labelled_precision / completeness) if completeness > 0 else 0.0
    return 0.0 if precision + recall <= 0 else 2 * precision * recall / (precision + recall)


def recommend_threshold(thresholds: Sequence[float], f1: Sequence[float]) -> float:
    """The threshold of the best held-out (PU-corrected) F1; ties and a flat curve go to the lower one."""
    best = max(f1) if len(f1) else 0.0
    if best <= 0:
        return float(thresholds[0])
    return float(min(t for t, f in zip(thresholds, f1, strict=True) if f >= best - 1e-9))


def suggest_expected_particles(labelled_counts: Sequence[int], area: float, radius: float) -> float:
    """A guess at particles per micrograph when the user gives none.

    Users label the clearest particles, so the guess is twice the mean labelled count per
    labelled micrograph, capped at what fits at 50% area coverage. Logged so users can
    correct it with --expected-particles.
    """
    mean = float(np.mean(labelled_counts)) if len(labelled_counts) else 1.0
    capacity = 0.5 * area / (math.pi * radius**2)
    return float(max(1.0, min(2.0 * mean, capacity)))


def split_holdout(names: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) micrograph names; at least one of each when there are >= 2 and fraction > 0."""
    names = list(names)
    if fraction <= 0 or len(names) < 2:
        return names, []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    n_hold = min(len(names) - 1, max(1, int(round(fraction * len(names)))))
    hold = sorted(names[i] for i in order[:n_hold])
    return [n for n in names if n not in hold], hold


#: fewest labelled micrographs for holding out whole micrographs; with one, a strip of it is
#: held out instead. Whole micrographs won on the ASPIRE bench even with 2-3 labelled: AP
#: 0.872/0.866 against 0.846/0.833 for strips (medium), 0.660 against 0.633 (hard), as the
#: held-out micrograph measures what picking needs (another micrograph), a strip does not.
MIN_HOLDOUT_MICROGRAPHS = 2


def holdout_strips(shapes: dict[str, tuple[int, int]], fraction: float, seed: int) -> dict[str, tuple[int, int]]:
    """A held-out band of columns [c0, c1) per micrograph, ``fraction`` of its width, at a seeded place."""
    rng = np.random.default_rng(seed)
    strips = {}
    for name in sorted(shapes):
        width = shapes[name][1]
        span = max(1, int(round(fraction * width)))
        c0 = int(rng.integers(0, max(width - span, 0) + 1))
        strips[name] = (c0, c0 + span)
    return strips


def _fingerprint(settings: TrainSettings, preprocess: PreprocessSettings, names: Sequence[str], n_labels: int) -> str:
    data = {"train": settings.to_dict(), "pre": preprocess.to_dict(), "names": list(names), "n": n_labels}
    data["train"].pop("device", None)
    data["train"].pop("num_threads", None)
    data["pre"].pop("cache_dir", None)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _working_labels(prepared: PreparedMicrograph, picks: Picks) -> np.ndarray:
    cols, rows = prepared.to_working(picks.x, picks.y)
    h, w = prepared.image.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return np.stack([rows[inside], cols[inside]], axis=1)


def _picks_at(maps: Sequence[torch.Tensor], names: Sequence[str], radius: float, threshold: float,
              edge_margin: int) -> Picks:
    tables = []
    for name, smap in zip(names, maps):
        rows, cols, scores = find_peaks(smap, radius=max(1, int(round(radius))), threshold=threshold,
                                        edge_margin=edge_margin)
        tables.append(Picks.for_one(name, cols, rows, scores))
    return Picks.concat(tables)


def ge_binomial_grouped(objective: GEBinomialObjective, pos: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
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


class _TrainForward(nn.Module):
    """The training forward as one module (what DistributedDataParallel wraps).

    ``forward(x, ae_index)`` -> (logits [B,1,h,w], reconstructions [k, RF*RF] of the
    feature vectors at ``ae_index`` = (b, y, x) index tensors, or None).
    """

    def __init__(self, net: nn.Module, channels_last: bool = True) -> None:
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        if channels_last:  # oneDNN's / cuDNN's fastest layout for these convolutions
            net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, ae_index: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.net.features(x)
        logits = self.net.classify(features)
        if ae_index is None:
            return logits, None
        bi, yi, xi = ae_index
        rf = self.net.receptive_field
        with torch.autocast(x.device.type, enabled=False):  # the decoder runs in fp32, as before
            chosen = features[bi, :, yi, xi][:, :, None, None].float()
            recon = self.net.reconstruct(chosen).reshape(len(bi), rf * rf)
        return logits, recon


def _distributed() -> tuple[int, int]:
    """(rank, world size) of an initialized torch.distributed process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """One training run; ``run()`` does the epochs and returns the best network's state."""

    def __init__(self, prepared: Sequence[PreparedMicrograph], labels: Picks, settings: TrainSettings,
                 preprocess: PreprocessSettings, workdir: Path, progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> None:
        self.settings = settings
        self.preprocess = preprocess
        self.workdir = Path(workdir)
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.device = resolve_device(settings.device)
        set_threads(settings.num_threads)
        self.rank, self.world_size = _distributed()
        torch.manual_seed(settings.seed + self.rank)
        self.by_name = {p.name: p for p in prepared}
        labelled = [p.name for p in prepared if len(labels.for_micrograph(p.name))]
        if not labelled:
            raise InputError("no labelled particle falls on any of the given micrographs")
        self.labels = labels
        self.working_labels = {n: _working_labels(self.by_name[n], labels.for_micrograph(n)) for n in labelled}
        by_region = settings.holdout_by == "region" or (
            settings.holdout_by == "auto" and len(labelled) < MIN_HOLDOUT_MICROGRAPHS)
        #: held-out column bands (region hold-out), or empty (whole micrographs held out)
        self.strips: dict[str, tuple[int, int]] = {}
        if by_region and settings.holdout_fraction > 0:
            self.train_names, self.holdout_names = list(labelled), list(labelled)
            self.strips = holdout_strips({n: self.by_name[n].image.shape for n in labelled},
                                         settings.holdout_fraction, settings.seed)
        else:
            self.train_names, self.holdout_names = split_holdout(labelled, settings.holdout_fraction, settings.seed)
        self.train_labels = {n: self._outside_strip(n, self.working_labels[n]) for n in self.train_names}
        self.n_train_labels = int(sum(len(v) for v in self.train_labels.values()))
        self.radius = float(np.mean([settings.particle_diameter / 2 / p.working_pixel_size
                                     if p.working_pixel_size else 0 for p in prepared])) or 10.0
        self._setup_pi(prepared)
        gamma = settings.autoencoder if settings.autoencoder is not None else default_autoencoder_weight(self.n_train_labels)
        self.gamma = float(gamma)
        self.net = build_model(settings.model, settings.width, autoencoder=self.gamma > 0)
        self.init = resolve_init(settings.init, settings.model, settings.width)
        if self.init:
            load_initial_weights(self.net, self.init)
        self.net = self.net.to(self.device)
        self.forward_module: nn.Module = _TrainForward(self.net)
        if self.world_size > 1:  # gradients averaged over ranks; rank 0's initial weights broadcast
            from torch.nn.parallel import DistributedDataParallel

            self.forward_module = DistributedDataParallel(
                self.forward_module, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.objective = make_objective(settings.objective, self.pi, settings.ge_weight)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.learning_rate)
        images = [TrainingImage(self.by_name[n].image, self._training_mask(n), self.train_labels[n])
                  for n in self.train_names]
        self.sampler = PatchSampler(images, self.net.receptive_field, settings.patch_size,
                                    seed=settings.seed + self.rank, augment=settings.augment)
        self.fingerprint = _fingerprint(settings, preprocess, self.train_names + self.holdout_names, len(labels))
        self.checkpoint_path = self.workdir / "checkpoint.pt"

    def _outside_strip(self, name: str, rows_cols: np.ndarray) -> np.ndarray:
        """The labels of ``name`` that training may use (all of them unless a strip is held out)."""
        if name not in self.strips:
            return rows_cols
        c0, c1 = self.strips[name]
        return rows_cols[(rows_cols[:, 1] < c0) | (rows_cols[:, 1] >= c1)]

    def _training_mask(self, name: str) -> np.ndarray:
        """The label mask of a training micrograph, IGNORE over its held-out strip."""
        labels = self.working_labels[name]
        mask = label_mask(self.by_name[name].image.shape, labels[:, 0], labels[:, 1], self.settings.training_radius)
        if name in self.strips:
            c0, c1 = self.strips[name]
            mask[:, c0:c1] = IGNORE
        return mask

    def _setup_pi(self, prepared: Sequence[PreparedMicrograph]) -> None:
        s = self.settings
        areas = [self.by_name[n].image.size for n in self.train_names]
        counts = [len(self.working_labels[n]) for n in self.train_names]
        if s.expected_particles is None:
            self.expected = suggest_expected_particles(counts, float(np.mean(areas)), self.radius)
            log.info("no expected particle count given: assuming %.0f per micrograph (2x the mean labelled "
                     "count); set --expected-particles if you know better", self.expected)
        else:
            self.expected = float(s.expected_particles)
        self.pi = positive_fraction_pi(self.expected, s.training_radius, float(np.mean(areas)))
        log.info("pi (positive fraction of unlabeled pixels) = %.4f", self.pi)

    # ------------------------------------------------------------ one step
    @property
    def is_main(self) -> bool:
        """Whether this process validates, checkpoints and writes (rank 0, or the only process)."""
        return self.rank == 0

    def _set_learning_rate(self, step: int, total: int) -> None:
        """The learning rate of step ``step`` of ``total`` (a pure function of the step, so resumes match)."""
        lr = learning_rate_at(self.settings.learning_rate, self.settings.lr_schedule, step, total)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _step(self) -> float:
        s = self.settings
        patches, masks = self.sampler.sample(s.minibatch_size, s.positive_fraction)
        x = torch.from_numpy(patches).to(self.device)
        m = torch.from_numpy(masks).to(self.device)
        unlabeled = m == UNLABELED
        # random draws in the order of the original loop: GE groups, then autoencoder samples
        order = self._group_order(int(unlabeled.sum()))
        ae_index = self._autoencoder_index(x) if self.gamma > 0 else None
        self.forward_module.train()
        with autocast(self.device):
            logits, recon = self.forward_module(x, ae_index)
        logits = logits[:, 0].float()
        pos = logits[m == POSITIVE]
        unl = logits[unlabeled]
        loss = self._objective(pos, unl, order)
        if ae_index is not None:
            loss = loss + self.gamma * self._autoencoder_loss(x, ae_index, recon)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def _group_order(self, n_unlabeled: int) -> torch.Tensor | None:
        """The random grouping of unlabeled outputs for GE-binomial (None: no grouping)."""
        if self.settings.objective != "ge-binomial" or n_unlabeled < 2 * GE_GROUP:
            return None
        groups = n_unlabeled // GE_GROUP
        return torch.randperm(n_unlabeled, device=self.device)[: groups * GE_GROUP]

    def _objective(self, pos: torch.Tensor, unl: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        if self.settings.objective != "ge-binomial" or unl.numel() < 2 * GE_GROUP:
            return self.objective(pos, unl)
        if order is None:
            order = self._group_order(unl.numel())
        assert order is not None
        chunks = unl[order].view(-1, GE_GROUP)
        return ge_binomial_grouped(self.objective, pos, chunks)  # type: ignore[arg-type]

    def _autoencoder_index(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rf = self.net.receptive_field
        b, h, w = x.shape[0], x.shape[-2] - rf + 1, x.shape[-1] - rf + 1
        idx = torch.randint(0, b * h * w, (AUTOENCODER_SAMPLES,), device=x.device)
        bi, rem = idx // (h * w), idx % (h * w)
        return bi, rem // w, rem % w

    def _autoencoder_loss(self, x: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                          recon: torch.Tensor) -> torch.Tensor:
        bi, yi, xi = index
        rf = self.net.receptive_field
        offsets = torch.arange(rf, device=x.device)
        rows = (yi[:, None] + offsets[None, :])[:, :, None]
        cols = (xi[:, None] + offsets[None, :])[:, None, :]
        target = x[bi[:, None, None], 0, rows, cols].reshape(len(bi), rf * rf)
        return torch.mean((recon - target) ** 2)

    # ------------------------------------------------------------ validation
    def _heldout_picks(self, names: Sequence[str], threshold: float) -> tuple[Picks, Picks]:
        """(picks, labelled reference) on the held-out data, working pixels: whole micrographs or strips."""
        # scored as extraction scores by default, so the recommended threshold fits the picking maps
        maps = score_batch(self.net, [self.by_name[n].image for n in names], self.device,
                           symmetries=ExtractSettings.symmetries)
        picks = _picks_at(maps, names, self.radius, threshold, 0)
        reference = Picks.concat(Picks.for_one(n, self.working_labels[n][:, 1], self.working_labels[n][:, 0])
                                 for n in names)
        if self.strips:
            picks, reference = self._in_strips(picks), self._in_strips(reference)
        return picks, reference

    def _in_strips(self, picks: Picks) -> Picks:
        bounds = np.array([self.strips[n] for n in picks.micrograph], dtype=float).reshape(-1, 2)
        return picks.select((picks.x >= bounds[:, 0]) & (picks.x < bounds[:, 1]))

    def _validate(self, names: Sequence[str]) -> dict[str, float]:
        if not names:
            return {}
        picks, reference = self._heldout_picks(names, -math.inf)
        result = evaluate_picks(picks.above(0.0), reference, self.radius)
        full = evaluate_picks(picks, reference, self.radius)
        return {"precision": result.precision, "recall": result.recall, "ap": full.average_precision}

    # ------------------------------------------------------------ checkpoints
    # ------------------------------------------------------------ ranks (DistributedDataParallel)
    def _broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _all_gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is True on any rank (all ranks stop at the same step)."""
        if self.world_size == 1:
            return flag
        import torch.distributed as dist

        device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def _sync_from_main(self) -> None:
        """Every rank takes rank 0's weights and batch-norm statistics."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in self.net.state_dict().values():
                dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        """Wait for every rank (a no-op for one process)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _rng_state(self) -> dict[str, Any]:
        return {"sampler": json.dumps(self.sampler.rng.bit_generator.state), "torch": torch.get_rng_state()}

    def _save_checkpoint(self, epoch: int, history: list, best: dict) -> None:
        ranks = self._all_gather(self._rng_state()) if self.world_size > 1 else None
        if not self.is_main:
            return
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "history": json.dumps(history),
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": best.get("state"),
            "best": json.dumps({k: v for k, v in best.items() if k != "state"}),
            "sampler_rng": json.dumps(self.sampler.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
        }
        if ranks is not None:  # every rank's random state, so a resumed run continues each rank's stream
            state["rank_sampler_rng"] = json.dumps([r["sampler"] for r in ranks])
            state["rank_torch_rng"] = [r["torch"] for r in ranks]
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def _load_checkpoint(self) -> tuple[int, list, dict] | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign checkpoint: start over, never crash
            log.warning("ignoring unreadable checkpoint %s (%s)", self.checkpoint_path, str(exc).splitlines()[0][:100])
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.warning("checkpoint %s is from a run with other settings or data: starting afresh", self.checkpoint_path)
            return None
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        sampler_rng, torch_rng = state["sampler_rng"], state["torch_rng"]
        if self.world_size > 1:
            per_rank = json.loads(state.get("rank_sampler_rng", "[]"))
            if len(per_rank) == self.world_size:
                sampler_rng, torch_rng = per_rank[self.rank], state["rank_torch_rng"][self.rank]
            else:
                sampler_rng = torch_rng = None
                if self.is_main:
                    log.warning("checkpoint written with another number of ranks: weights resumed, random "
                                "streams restarted from the seed")
        if sampler_rng is not None:
            self.sampler.rng.bit_generator.state = json.loads(sampler_rng)
            torch.set_rng_state(torch_rng)
        best = json.loads(state["best"])
        best["state"] = state["best_state"]
        return int(state["epoch"]), json.loads(state["history"]), best

    # ------------------------------------------------------------ the loop
    def run(self) -> tuple[list[dict[str, Any]], dict]:
        s = self.settings
        start_epoch, history, best = 0, [], {"ap": -1.0, "epoch": 0, "state": None, "since": 0}
        resumed = self._load_checkpoint()
        if self.world_size > 1:
            starts = self._all_gather(resumed[0] if resumed else 0)
            if len(set(starts)) != 1:
                raise InputError(f"ranks found different checkpoints (epochs {starts}); the work directory must be "
                                 "shared by all ranks", self.checkpoint_path)
        if resumed:
            start_epoch, history, best = resumed
            log.info("resuming from checkpoint after epoch %d of %d", start_epoch, s.epochs)
        total = s.epochs * s.steps_per_epoch
        for epoch in range(start_epoch + 1, s.epochs + 1):
            if best.get("since", 0) >= s.patience and self.holdout_names:
                log.info("early stop: held-out AP has not improved for %d epochs", s.patience)
                break
            started = time.perf_counter()
            losses = []
            for step in range(s.steps_per_epoch):
                if self._any_rank(self.should_stop()):
                    raise AbortRequested(f"stopped during epoch {epoch}; the checkpoint after epoch "
                                         f"{epoch - 1} is kept and a re-run resumes from it")
                self._set_learning_rate((epoch - 1) * s.steps_per_epoch + step, total)
                losses.append(self._step())
                if self.progress:
                    done = (epoch - 1) * s.steps_per_epoch + step + 1
                    self.progress(done, total, f"epoch {epoch}/{s.epochs} loss {np.mean(losses):.4f}")
            metrics = self._broadcast(self._validate(self.holdout_names) if self.is_main else None)
            record = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - started, **metrics}
            history.append(record)
            score = metrics.get("ap", float(epoch))  # without hold-out, the last epoch is the best
            if score > best["ap"]:
                best = {"ap": score, "epoch": epoch, "since": 0,
                        "state": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}
            else:
                best["since"] = best.get("since", 0) + 1
            log.info("epoch %d/%d  loss %.4f  %s", epoch, s.epochs, record["loss"],
                     "  ".join(f"held-out {k} {v:.3f}" for k, v in metrics.items()) or "(no held-out micrographs)")
            self._save_checkpoint(epoch, history, best)
        if best.get("state") is not None:
            self.net.load_state_dict(best["state"])
        self._sync_from_main()
        return history, best

    # ------------------------------------------------------------ threshold help
    def threshold_table(self) -> tuple[list[tuple[float, float, float]], float]:
        """(threshold, picks per micrograph, held-out recall) rows and the recommended threshold.

        The recommendation maximises the held-out F1 with the precision corrected for the
        particles that carry no label (:func:`pu_f1`; the share labelled is the labelled count
        over the expected count), so it balances missed particles against false picks on
        data the network did not train on. Computed on rank 0 and shared with the other ranks.
        """
        if self.world_size > 1:
            rows, recommended = self._broadcast(self._threshold_table() if self.is_main else None)
            return [tuple(r) for r in rows], recommended  # type: ignore[misc]
        return self._threshold_table()

    def _threshold_table(self) -> tuple[list[tuple[float, float, float]], float]:
        names = self.holdout_names or self.train_names
        picks, reference = self._heldout_picks(names, THRESHOLD_GRID[0])
        # picks per micrograph: counts on strips are scaled up by the area they cover
        full = sum(self.by_name[n].image.size for n in names)
        seen = sum(self.by_name[n].image.shape[0] * (self.strips[n][1] - self.strips[n][0]) if self.strips
                   else self.by_name[n].image.size for n in names)
        per_micrograph = full / max(seen, 1) / len(names)
        # what share of the held-out particles carry a label (1 when whole micrographs are labelled)
        completeness = float(np.clip(len(reference) * per_micrograph / max(self.expected, 1e-9), 1e-3, 1.0))
        rows, f1 = [], []
        for t in THRESHOLD_GRID:
            kept = picks.above(t)
            result = evaluate_picks(kept, reference, self.radius) if len(reference) else None
            recall = result.recall if result is not None else float("nan")
            rows.append((t, len(kept) * per_micrograph, float(recall)))
            f1.append(0.0 if result is None else pu_f1(result.precision, result.recall, completeness))
        recommended = recommend_threshold([r[0] for r in rows], f1)
        return rows, float(recommended)

    def model_info(self, gmm: dict | None, recommended: float, table: list) -> dict[str, Any]:
        first = next(iter(self.by_name.values()))
        pixel_size = first.working_pixel_size
        return {
            "architecture": self.settings.model,
            "width": self.settings.width,
            "autoencoder": self.gamma > 0,
            "receptive_field": int(self.net.receptive_field),
            "pixel_size": pixel_size,
            "downsample": float(first.scale[0]),
            "particle_diameter": self.settings.particle_diameter,
            "normalization": self.preprocess.normalization,
            "gmm": gmm,
            "pi": self.pi,
            "expected_particles": self.expected,
            "recommended_threshold": recommended,
            "threshold_table": table,
            "train_settings": self.settings.to_dict(),
            "preprocess_settings": self.preprocess.to_dict(),
            "trained_with": __version__,
            "init": self.init,
        }
