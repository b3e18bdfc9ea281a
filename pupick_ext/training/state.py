"""The state of one training run (:class:`TrainState`) and how it is built.

Built once by :func:`build_state`, in an order that fixes the random streams: the seed
first, then the network's initial weights, then the patch sampler.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..io.picks import Picks
from ..network.models import PickerNet, build_model
from ..network.objectives import Objective, default_autoencoder_weight, make_objective
from ..parallel.device import resolve_device, set_threads, uses_bf16
from ..prep.preprocess import PreparedMicrograph
from ..settings import PreprocessSettings, TrainSettings
from .collectives import rank_and_world
from .data import TrainData, prepare_data, training_images
from .forward import TrainForward
from .initial import load_initial_weights, resolve_init
from .sampling import PatchSampler

log = logging.getLogger(__name__)

#: the checkpoint's file name in the work directory (the held-out run, or the only run)
CHECKPOINT_FILE = "checkpoint.pt"
#: the refit's checkpoint (a run on every labelled micrograph after the held-out run)
REFIT_CHECKPOINT_FILE = "checkpoint_refit.pt"


@dataclass
class TrainState:
    """Everything a training run reads and updates, step to step and epoch to epoch."""

    settings: TrainSettings
    preprocess: PreprocessSettings
    workdir: Path
    device: torch.device
    rank: int
    world_size: int
    data: TrainData
    #: autoencoder weight (0: no decoder)
    gamma: float
    #: what the weights started from (None: random)
    init: str | None
    net: PickerNet
    #: the training forward: :class:`TrainForward`, wrapped by DistributedDataParallel for > 1 rank
    forward: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    sampler: PatchSampler
    #: this run's checkpoint file in ``workdir``
    checkpoint_file: str = CHECKPOINT_FILE
    #: whether the training convolutions run in bf16 (``settings.precision`` resolved once for ``device``)
    bf16: bool = False
    #: the start model's weights (name -> tensor, decoder excluded) that ``settings.anchor`` pulls
    #: towards; empty when training starts from random weights or the anchor is off
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        """Whether this process validates, checkpoints and writes (rank 0, or the only process)."""
        return self.rank == 0


def build_state(prepared: Sequence[PreparedMicrograph], labels: Picks, settings: TrainSettings,
                preprocess: PreprocessSettings, workdir: str | Path,
                checkpoint_file: str = CHECKPOINT_FILE) -> TrainState:
    """A fresh run: data split, seeded network (or pretrained start), optimizer and patch sampler."""
    device = resolve_device(settings.device)
    set_threads(settings.num_threads)
    rank, world_size = rank_and_world()
    torch.manual_seed(settings.seed + rank)
    data = prepare_data(prepared, labels, settings)
    gamma = float(settings.autoencoder if settings.autoencoder is not None
                  else default_autoencoder_weight(data.n_train_labels))
    net = build_model(settings.model, settings.width, autoencoder=gamma > 0)
    init = resolve_init(settings.init, settings.model, settings.width)
    if init:
        load_initial_weights(net, init)
    net = net.to(device)
    anchor = start_weights(net) if init and settings.anchor > 0 else {}
    bf16 = uses_bf16(device, settings.precision)
    log.info("training on %s in %s", device, "bf16 (mixed precision)" if bf16 else "fp32")
    forward: nn.Module = TrainForward(net)
    if world_size > 1:  # gradients averaged over ranks; rank 0's initial weights broadcast
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(forward, device_ids=[device] if device.type == "cuda" else None)
    objective = make_objective(settings.objective, data.pi, settings.ge_weight)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    sampler = PatchSampler(training_images(data, settings.training_radius), net.receptive_field,
                           settings.patch_size, seed=settings.seed + rank, augment=settings.augment)
    return TrainState(settings, preprocess, Path(workdir), device, rank, world_size, data, gamma, init, net,
                      forward, objective, optimizer, sampler, checkpoint_file, bf16, anchor)


def start_weights(net: PickerNet) -> dict[str, torch.Tensor]:
    """Copies of the parameters training starts from (the decoder's excluded: it starts afresh)."""
    return {name: p.detach().clone() for name, p in net.named_parameters() if not name.startswith("decoder.")}
