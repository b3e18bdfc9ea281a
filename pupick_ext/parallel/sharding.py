"""One sharded extraction for every host: split, skip finished, pick, report to rank 0, gather.

``pupick extract`` and ``pupick-relion`` both pick through :func:`pick_sharded`. Run as N
ranks, rank r takes items r, r+N, ... of the *whole* list (split before finished items are
skipped, so every rank agrees on the split whenever it starts), writes each micrograph's
output as soon as it is picked (the host's ``write`` callback), and reports to rank 0. A
rank that fails reports its error instead (:func:`report_failure`), so rank 0 fails the
run with that message rather than waiting for ever. Rank 0 gets the totals over all ranks
and, with ``combine``, every rank's picks in the order one process would have written
them (values exact: see ``distributed.gather_picks``). One process runs the same code,
without messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import first_line
from ..io.picks import Picks
from ..settings import ShouldStop
from .distributed import Coordinator, RankInfo, gather_picks

T = TypeVar("T")


@dataclass
class ShardedPicks(Generic[T]):
    """What :func:`pick_sharded` did.

    ``main`` is True on rank 0 (and for one process): then ``n_picks`` and ``n_micrographs``
    count every rank's work and ``picks`` holds every rank's picks (with ``combine``; else
    this rank's). On the other ranks all of it is this rank's own; they leave the combined
    outputs to rank 0. ``picked`` is this rank's (item, picks) in picking order and
    ``skipped`` this rank's items that were finished already.
    """

    main: bool
    picks: Picks
    n_picks: int
    n_micrographs: int
    picked: list[tuple[T, Picks]] = field(default_factory=list)
    skipped: list[T] = field(default_factory=list)


def report_failure(coordinator: Coordinator | None, name: str, error: BaseException) -> None:
    """On a rank other than 0: send ``error``'s first line as this rank's report ``name``, so rank 0
    fails the run with it instead of waiting. Nothing when the rank has reported ``name`` already,
    or on rank 0; never raises (the original error matters more)."""
    if coordinator is None or coordinator.info.is_main or coordinator.sent(name):
        return
    with contextlib.suppress(Exception):
        coordinator.gather(name, {"ok": False, "error": first_line(error, 500)})


def pick_sharded(
    items: Sequence[T],
    pick: Callable[[list[T]], Iterable[tuple[T, Picks]]],
    key: Callable[[T], str],
    name: str,
    ranks: RankInfo | None = None,
    coordinator: Coordinator | None = None,
    finished: Callable[[T], bool] | None = None,
    on_skip: Callable[[list[T], list[T]], None] | None = None,
    write: Callable[[T, Picks], None] | None = None,
    combine: bool = False,
    should_stop: ShouldStop | None = None,
) -> ShardedPicks[T]:
    """Pick this rank's share of ``items`` and bring every rank's result to rank 0.

    ``pick(todo)`` yields ``(item, picks)`` for this rank's unfinished items (the host's
    extraction, e.g. ``extract_iter``); ``key(item)`` is the micrograph name that orders
    combined picks; ``finished(item)`` says an earlier run completed it (then it is skipped;
    ``on_skip(todo, skipped)`` lets the host say so); ``write(item, picks)`` writes one
    micrograph's output as soon as it is picked. ``name`` is the message the ranks report
    under (unique within a run). Raises the first failure any rank reported (on rank 0).
    """
    ranks = ranks or (coordinator.info if coordinator is not None else RankInfo())
    mine = ranks.shard(items)
    is_done = [bool(finished(item)) for item in mine] if finished is not None else [False] * len(mine)
    todo = [item for item, done in zip(mine, is_done, strict=True) if not done]
    skipped = [item for item, done in zip(mine, is_done, strict=True) if done]
    picked: list[tuple[T, Picks]] = []
    try:
        if on_skip is not None:
            on_skip(todo, skipped)
        for item, picks in pick(todo):
            if write is not None:
                write(item, picks)
            picked.append((item, picks))
    except BaseException as exc:
        report_failure(coordinator, name, exc)
        raise
    own = Picks.concat([picks for _, picks in picked])
    if coordinator is None or not ranks.active:
        return ShardedPicks(True, own, len(own), len(picked), picked, skipped)
    combined = gather_picks(coordinator, name, own, len(picked), [key(item) for item in items], combine,
                            should_stop)
    if combined is None:  # not rank 0: rank 0 has this rank's report
        return ShardedPicks(False, own, len(own), len(picked), picked, skipped)
    merged, n_picks, n_micrographs = combined
    coordinator.close()
    return ShardedPicks(True, merged if merged is not None else own, n_picks, n_micrographs, picked, skipped)
