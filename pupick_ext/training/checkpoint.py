"""The training checkpoint: written after every epoch, found and resumed by a re-run.

A checkpoint holds the weights, the optimizer, the best epoch so far, the history and
every rank's random streams, so a resumed run continues exactly where the interrupted
one stopped. Its fingerprint (settings and data) keeps a run from resuming another's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..io.fsio import atomic_path
from ..settings import PreprocessSettings, TrainSettings
from .collectives import all_gather
from .state import TrainState

log = logging.getLogger(__name__)


@dataclass
class Best:
    """The best epoch so far by held-out AP (the last epoch without hold-out) and its weights."""

    ap: float = -1.0
    epoch: int = 0
    #: epochs since the best one (for early stopping)
    since: int = 0
    state: dict[str, torch.Tensor] | None = None

    def summary(self) -> dict[str, Any]:
        """Everything but the weights (stored as JSON in the checkpoint)."""
        return {"ap": self.ap, "epoch": self.epoch, "since": self.since}


@dataclass
class Resumed:
    """Where a run starts: after ``epoch`` (0: from scratch), with its history and best epoch."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: Best = field(default_factory=Best)


def checkpoint_path(state: TrainState) -> Path:
    """Where this run's checkpoint lives."""
    return state.workdir / state.checkpoint_file


def fingerprint(settings: TrainSettings, preprocess: PreprocessSettings, names: Sequence[str],
                n_labels: int) -> str:
    """A hash of what decides the training (not the device or thread count)."""
    train, pre = settings.to_dict(), preprocess.to_dict()
    train.pop("device", None)
    train.pop("num_threads", None)
    pre.pop("cache_dir", None)
    data = {"train": train, "pre": pre, "names": list(names), "n": n_labels}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _state_fingerprint(state: TrainState) -> str:
    d = state.data
    return fingerprint(state.settings, state.preprocess, d.train_names + d.holdout_names, d.n_labels)


def checkpoint_dict(state: TrainState, epoch: int, history: list[dict[str, Any]], best: Best,
                    ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The checkpoint's contents: the one place they are put together.

    ``ranks`` (for more than one rank) are every rank's random states, so a resumed run
    continues each rank's stream.
    """
    out: dict[str, Any] = {
        "fingerprint": _state_fingerprint(state),
        "epoch": epoch,
        "history": json.dumps(history),
        "net": state.net.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "best_state": best.state,
        "best": json.dumps(best.summary()),
        "sampler_rng": json.dumps(state.sampler.rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
    }
    if ranks is not None:
        out["rank_sampler_rng"] = json.dumps([r["sampler"] for r in ranks])
        out["rank_torch_rng"] = [r["torch"] for r in ranks]
    return out


def save_checkpoint(state: TrainState, epoch: int, history: list[dict[str, Any]], best: Best) -> None:
    """Write the checkpoint after ``epoch`` (rank 0; every rank must call it, to share random states)."""
    ranks = all_gather(_rng_state(state)) if state.world_size > 1 else None
    if not state.is_main:
        return
    with atomic_path(checkpoint_path(state)) as tmp:
        torch.save(checkpoint_dict(state, epoch, history, best, ranks), tmp)


def resume(state: TrainState) -> Resumed:
    """Load a matching checkpoint into ``state`` if there is one; check that all ranks found the same."""
    resumed = _load_checkpoint(state)
    if state.world_size > 1:
        starts = all_gather(resumed.epoch if resumed else 0)
        if len(set(starts)) != 1:
            raise InputError(f"ranks found different checkpoints (epochs {starts}); the work directory "
                             "must be shared by all ranks", checkpoint_path(state))
    if resumed is None:
        return Resumed()
    log.info("resuming from checkpoint after epoch %d of %d", resumed.epoch, state.settings.epochs)
    return resumed


def _rng_state(state: TrainState) -> dict[str, Any]:
    return {"sampler": json.dumps(state.sampler.rng.bit_generator.state), "torch": torch.get_rng_state()}


def _load_checkpoint(state: TrainState) -> Resumed | None:
    path = checkpoint_path(state)
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign checkpoint: start over, never crash
        log.warning("ignoring unreadable checkpoint %s (%s)", path, str(exc).splitlines()[0][:100])
        return None
    if saved.get("fingerprint") != _state_fingerprint(state):
        log.warning("checkpoint %s is from a run with other settings or data: starting afresh", path)
        return None
    state.net.load_state_dict(saved["net"])
    state.optimizer.load_state_dict(saved["optimizer"])
    sampler_rng, torch_rng = saved["sampler_rng"], saved["torch_rng"]
    if state.world_size > 1:
        per_rank = json.loads(saved.get("rank_sampler_rng", "[]"))
        if len(per_rank) == state.world_size:
            sampler_rng, torch_rng = per_rank[state.rank], saved["rank_torch_rng"][state.rank]
        else:
            sampler_rng = torch_rng = None
            if state.is_main:
                log.warning("checkpoint written with another number of ranks: weights resumed, random "
                            "streams restarted from the seed")
    if sampler_rng is not None:
        state.sampler.rng.bit_generator.state = json.loads(sampler_rng)
        torch.set_rng_state(torch_rng)
    summary = json.loads(saved["best"])
    best = Best(summary["ap"], summary["epoch"], summary.get("since", 0), saved["best_state"])
    return Resumed(int(saved["epoch"]), json.loads(saved["history"]), best)
