"""The epochs: train, validate, checkpoint, keep the last (or best) epoch; resume from a checkpoint."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..errors import AbortRequested
from ..settings import Progress, ShouldStop
from .checkpoint import Best, resume, save_checkpoint
from .collectives import any_rank, broadcast, sync_from_main
from .state import TrainState
from .step import set_learning_rate, train_step
from .validate import validate

log = logging.getLogger(__name__)


def _never() -> bool:
    return False


def fit(state: TrainState, progress: Progress | None = None,
        should_stop: ShouldStop | None = None) -> tuple[list[dict[str, Any]], Best]:
    """Run the epochs (from a checkpoint if one matches) and leave the kept epoch's weights in ``state.net``.

    ``keep="last"`` (the default) runs the whole learning-rate schedule and keeps its end: on
    the ASPIRE bench the final epoch matched or beat the best held-out epoch on 5 of 6 datasets,
    because one or two held-out micrographs rank epochs noisily. ``keep="best"`` keeps the best
    held-out AP and stops after ``patience`` epochs without a gain. Returns the per-epoch history
    and the best held-out epoch. Every rank ends with rank 0's weights.
    Raises AbortRequested when ``should_stop`` says so (on any rank); the last checkpoint is kept.
    """
    s = state.settings
    start = resume(state)
    history, best = start.history, start.best
    for epoch in range(start.epoch + 1, s.epochs + 1):
        if s.keep == "best" and best.since >= s.patience and state.data.holdout_names:
            log.info("early stop: held-out AP has not improved for %d epochs", s.patience)
            break
        started = time.perf_counter()
        loss = train_one_epoch(state, epoch, progress, should_stop or _never)
        metrics = broadcast(validate(state) if state.is_main else None)
        record = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - started, **metrics}
        history.append(record)
        score = metrics.get("ap", float(epoch))  # without hold-out, the last epoch is the best
        best = _update_best(state, best, score, epoch)
        shown = "  ".join(f"held-out {k} {v:.3f}" for k, v in metrics.items())
        log.info("epoch %d/%d  loss %.4f  %s", epoch, s.epochs, record["loss"],
                 shown or "(no held-out micrographs)")
        save_checkpoint(state, epoch, history, best)
    if s.keep == "best" and best.state is not None:
        state.net.load_state_dict(best.state)
    sync_from_main(state.net)
    return history, best


def train_one_epoch(state: TrainState, epoch: int, progress: Progress | None,
                    should_stop: ShouldStop) -> float:
    """``steps_per_epoch`` optimizer steps of epoch ``epoch`` (1-based); the mean loss."""
    s = state.settings
    total = s.epochs * s.steps_per_epoch
    losses = []
    for step in range(s.steps_per_epoch):
        if any_rank(should_stop(), state.device):
            raise AbortRequested(f"stopped during epoch {epoch}; the checkpoint after epoch "
                                 f"{epoch - 1} is kept and a re-run resumes from it")
        done = (epoch - 1) * s.steps_per_epoch + step
        set_learning_rate(state, done, total)
        losses.append(train_step(state))
        if progress:
            progress(done + 1, total, f"epoch {epoch}/{s.epochs} loss {np.mean(losses):.4f}")
    return float(np.mean(losses))


def _update_best(state: TrainState, best: Best, score: float, epoch: int) -> Best:
    if score > best.ap:
        return Best(score, epoch, 0, {k: v.detach().clone() for k, v in state.net.state_dict().items()})
    best.since += 1
    return best
