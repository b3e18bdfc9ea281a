"""Scale-out: pupick as N cooperating processes (torchrun, srun, mpirun).

**Ranks.** :func:`rank_info` reads the launcher's environment, first match wins:

==========  =============================================  ==================================
launcher    rank / size (/ local rank)                     run id (unique per launch)
==========  =============================================  ==================================
explicit    PUPICK_RANK / PUPICK_WORLD_SIZE                PUPICK_RUN_ID
torchrun    RANK / WORLD_SIZE / LOCAL_RANK                 (process group, see below)
Open MPI    OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK     PMIX_NAMESPACE, OMPI_MCA_ess_base_jobid
MPICH, PMI  PMI_RANK / PMI_SIZE / MPI_LOCALRANKID          SLURM_JOB_ID.SLURM_STEP_ID, PMI_KVSNAME
srun        SLURM_PROCID / SLURM_STEP_NUM_TASKS / ..LOCALID  SLURM_JOB_ID.SLURM_STEP_ID
==========  =============================================  ==================================

SLURM variables count only inside a job *step* (``SLURM_STEP_ID`` set, as srun does): a
batch script itself has ``SLURM_PROCID=0`` and ``SLURM_NTASKS=N`` but is one process.

**Extraction** needs no communication while it runs: rank r picks ``entries[r::N]`` (of the
full list, before finished micrographs are skipped, so every rank agrees on the split
whenever it starts) and writes its per-micrograph files. At the end each rank reports to
rank 0 (:meth:`Coordinator.gather`), which waits for all of them and then writes what
combines the shards: the single output file, RELION's index and exit marker.

**Coordination** (:class:`Coordinator`) goes through a torch.distributed process group
when the launcher provides a rendezvous (``MASTER_ADDR``/``MASTER_PORT``, as torchrun
does; gloo for these small messages), and otherwise through small JSON files in a shared
directory, ``<dir>/.pupick_ranks/<run id>/`` (srun, mpirun: the output directory is on a
file system all ranks see anyway). A rank that fails still reports, with its error, so
rank 0 fails the run with that message instead of waiting. A rank that is killed outright
cannot report; launch with ``srun --kill-on-bad-exit=1`` (mpirun and torchrun stop all
ranks when one dies) or set ``PUPICK_WAIT_TIMEOUT`` (seconds).

**Training** (``pupick train`` under torchrun) uses DistributedDataParallel: see
``training.Trainer``; rank r samples its own patches with seed ``seed + r``; gradients are
averaged over ranks; rank 0 validates, checkpoints and writes the model.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AbortRequested, PupickError, SettingsError
from ..io.fsio import atomic_path, write_atomic

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "Coordinator",
    "RankInfo",
    "default_threads",
    "init_process_group",
    "process_group_active",
    "rank_device",
    "rank_info",
]

#: (launcher, rank variable, size variable, local-rank variable), in order of precedence
_SCHEMES: tuple[tuple[str, str, str, str], ...] = (
    ("explicit", "PUPICK_RANK", "PUPICK_WORLD_SIZE", "PUPICK_LOCAL_RANK"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"),
)

#: run-id variables, in order of preference, per launcher (the first one set is used)
_RUN_IDS: dict[str, tuple[str, ...]] = {
    "explicit": ("PUPICK_RUN_ID",),
    "torchrun": ("PUPICK_RUN_ID", "TORCHELASTIC_RUN_ID"),
    "openmpi": ("PUPICK_RUN_ID", "PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_ess_jobid",
                "SLURM_STEP"),
    "pmi": ("PUPICK_RUN_ID", "SLURM_STEP", "PMI_KVSNAME", "PMIX_NAMESPACE"),
    "slurm": ("PUPICK_RUN_ID", "SLURM_STEP"),
}

_LOCAL_SIZES = ("PUPICK_LOCAL_WORLD_SIZE", "LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE",
                "MPI_LOCALNRANKS", "SLURM_STEP_TASKS_PER_NODE")

#: how long a rank waits for a message from another; None: for ever (see PUPICK_WAIT_TIMEOUT)
_TIMEOUT_ENV = "PUPICK_WAIT_TIMEOUT"
#: process-group timeout (collectives), generous: rank 0 may wait for the slowest shard
_PG_TIMEOUT = datetime.timedelta(hours=12)
_RANKS_DIR = ".pupick_ranks"


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _slurm_step(env: Mapping[str, str]) -> str | None:
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")
    step_id = _int(step)
    if not job or step_id is None or step_id >= 0xFFFFFF00:  # batch/extern/interactive steps are one process
        return None
    return f"{job}.{step_id}"


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands among the ranks of one launch."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"
    run_id: str = ""
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one rank."""
        return self.world_size > 1

    @property
    def has_rendezvous(self) -> bool:
        """Whether a torch.distributed process group can be formed from the environment."""
        return bool(os.environ.get("MASTER_ADDR")) and bool(os.environ.get("MASTER_PORT"))

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share: ``items[rank::world_size]`` (round-robin, so shards stay balanced)."""
        return list(items[self.rank :: self.world_size])

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size} ({self.launcher})"

    def device(self, name: str = "auto") -> str:
        """The device this rank uses for ``name``: with several ranks ``auto``/``cuda`` -> ``cuda:<local
        rank>``."""
        return rank_device(name, self)

    def setup_threads(self, threads: int = 0) -> int:
        """Set this rank's torch CPU threads: ``threads`` if > 0, else its share of the cores
        (:func:`default_threads`; nothing changes for a single process). Returns the number set (0: torch's
        default)."""
        n = threads if threads > 0 else default_threads(self)
        if n > 0:
            import torch

            torch.set_num_threads(n)
        return n


def rank_info(environ: Mapping[str, str] | None = None) -> RankInfo:
    """This process's rank, read from the launcher's environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    for launcher, rank_var, size_var, local_var in _SCHEMES:
        if launcher == "slurm":
            if _slurm_step(env) is None:
                continue
            size = _int(env.get(size_var)) or _int(env.get("SLURM_NTASKS"))
        else:
            size = _int(env.get(size_var))
        rank = _int(env.get(rank_var))
        if rank is None or size is None:
            continue
        if size < 1 or not 0 <= rank < size:
            raise SettingsError(f"{rank_var}={env.get(rank_var)} and {size_var}={env.get(size_var)} are not "
                                "a valid rank and number of ranks")
        local = _int(env.get(local_var))
        run_id = ""
        for var in _RUN_IDS.get(launcher, ()):
            value = _slurm_step(env) if var == "SLURM_STEP" else env.get(var)
            if value:
                run_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))[:100]
                break
        local_rank = local if local is not None else 0
        return RankInfo(rank, size, local_rank, launcher, run_id, _local_world_size(env, size))
    return RankInfo()


def _local_world_size(env: Mapping[str, str], world: int) -> int:
    for var in _LOCAL_SIZES:
        value = env.get(var)
        if value:
            n = _int(re.split(r"[(,]", value)[0])  # SLURM writes e.g. "2(x3)" or "2,1"
            if n and n > 0:
                return min(n, world)
    return world


def default_threads(info: RankInfo | None = None) -> int:
    """CPU threads for one rank when the user gave none: its share of the cores it may use.

    0 (torch's default) for a single process or when OMP_NUM_THREADS is set. A rank bound
    to a subset of the cores (srun --cpus-per-task) uses all of that subset; otherwise the
    node's cores are divided among the ranks on it.
    """
    info = info or rank_info()
    if not info.active or os.environ.get("OMP_NUM_THREADS"):
        return 0
    total = os.cpu_count() or 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    if available < total:
        return max(1, available)
    return max(1, available // max(1, info.local_world_size))


def rank_device(name: str, info: RankInfo | None = None) -> str:
    """The device one rank should use: ``auto``/``cuda`` become ``cuda:<local rank>`` with several ranks."""
    info = info or rank_info()
    key = str(name).strip().lower()
    if not info.active or key not in ("auto", "cuda"):
        return name
    import torch

    if not torch.cuda.is_available():
        if key == "cuda":
            return name  # resolve_device reports it
        return "cpu"
    return f"cuda:{info.local_rank % torch.cuda.device_count()}"


def process_group_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init_process_group(info: RankInfo | None = None, device: str = "cpu") -> bool:
    """Form the default process group from torchrun's environment (nccl for CUDA, else gloo).

    Returns False (and does nothing) without a rendezvous in the environment or with one rank.
    """
    import torch
    import torch.distributed as dist

    info = info or rank_info()
    if not info.active or not info.has_rendezvous or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    backend = "nccl" if str(device).startswith("cuda") and dist.is_nccl_available() else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
        kwargs["device_id"] = torch.device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size, timeout=_PG_TIMEOUT,
                            **kwargs)
    atexit.register(_destroy_process_group)
    log.info("torch.distributed process group: %s, backend %s", info.describe(), backend)
    return True


def _destroy_process_group() -> None:
    """Tear the process group down before the interpreter does.

    Left to interpreter shutdown, gloo's worker threads can be destroyed while still
    joinable, and the process then aborts ("terminate called without an active exception",
    SIGABRT) after its work is done: seen on a loaded 2-core machine, a rank that finished
    first and exited while rank 0 was still writing.
    """
    import torch.distributed as dist

    try:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception as exc:  # shutting down: report, never raise
        log.debug("process group teardown: %s", exc)


def _wait_timeout() -> float | None:
    value = os.environ.get(_TIMEOUT_ENV)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise SettingsError(f"{_TIMEOUT_ENV}={value!r} is not a number of seconds") from None
    return seconds if seconds > 0 else None


class Coordinator:
    """Messages between rank 0 and the others at a few points of a run.

    ``gather(name, payload)``: every rank sends a JSON-able dict; rank 0 gets the list (in
    rank order, its own first), the others get None and go on. ``broadcast(name, payload)``:
    rank 0 sends, every rank returns rank 0's dict. Through the process group if one is
    active (or can be formed from torchrun's environment), else through files in
    ``directory`` (see the module docstring). Message names must be unique within a run.
    """

    def __init__(self, info: RankInfo, directory: str | Path | None = None,
                 poll_seconds: float = 0.5) -> None:
        self.info = info
        self.poll = poll_seconds
        self._group: Any = None
        self._files: Path | None = None
        self._sent: set[str] = set()
        if not info.active:
            return
        if process_group_active() or (info.has_rendezvous and init_process_group(info)):
            import torch.distributed as dist

            # object messages go through gloo even when the default group is nccl
            self._group = dist.new_group(backend="gloo", timeout=_PG_TIMEOUT) \
                if dist.get_backend() != "gloo" else dist.group.WORLD
            return
        if directory is None:
            raise SettingsError(f"{info.describe()}: no process group and no shared directory to coordinate "
                                "through")
        if not info.run_id:
            log.warning("%s: the launcher gives no run id; coordinating through %s/%s/default (set "
                        "PUPICK_RUN_ID to a value unique to this launch)", info.describe(), directory,
                        _RANKS_DIR)
        self._files = Path(directory) / _RANKS_DIR / (info.run_id or "default")
        self._files.mkdir(parents=True, exist_ok=True)

    @property
    def transport(self) -> str:
        return "none" if not self.info.active else ("process group" if self._group is not None else "files")

    # ------------------------------------------------------------------ messages
    def gather(self, name: str, payload: dict[str, Any], should_stop: Callable[[], bool] | None = None,
               timeout: float | None = None) -> list[dict[str, Any]] | None:
        """Every rank's ``payload`` on rank 0 (see the class docstring); ``timeout`` (seconds, file
        transport) bounds rank 0's wait, default ``PUPICK_WAIT_TIMEOUT`` or for ever."""
        self._sent.add(name)
        if not self.info.active:
            return [payload]
        if self._group is not None:
            import torch.distributed as dist

            out: list[Any] | None = [None] * self.info.world_size if self.info.is_main else None
            dist.gather_object(payload, out, dst=0, group=self._group)
            return out
        assert self._files is not None
        if not self.info.is_main:
            write_atomic(self._files / f"{name}.{self.info.rank}.json", json.dumps(payload, default=str))
            return None
        received = [payload]
        for rank in range(1, self.info.world_size):
            path = self._files / f"{name}.{rank}.json"
            received.append(self._read(path, f"rank {rank}", should_stop, timeout))
        return received

    def sent(self, name: str) -> bool:
        """Whether this rank has taken part in ``gather(name, ...)`` already (a rank reports once)."""
        return name in self._sent

    def broadcast(self, name: str, payload: dict[str, Any] | None,
                  should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        if not self.info.active:
            assert payload is not None
            return payload
        if self._group is not None:
            import torch.distributed as dist

            box = [payload if self.info.is_main else None]
            dist.broadcast_object_list(box, src=0, group=self._group)
            return box[0]  # type: ignore[return-value]
        assert self._files is not None
        path = self._files / f"{name}.0.json"
        if self.info.is_main:
            assert payload is not None
            write_atomic(path, json.dumps(payload, default=str))
            return payload
        return self._read(path, "rank 0", should_stop)

    def _read(self, path: Path, who: str, should_stop: Callable[[], bool] | None,
              timeout: float | None = None) -> dict[str, Any]:
        timeout = timeout if timeout is not None else _wait_timeout()
        started = time.monotonic()
        last_note = started
        while True:
            if path.is_file():
                with contextlib.suppress(OSError, ValueError):
                    return json.loads(path.read_text(encoding="utf-8"))
            if should_stop is not None and should_stop():
                raise AbortRequested(f"stopped while waiting for {who}")
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                raise PupickError(f"{who} did not report within {timeout:g} s ({_TIMEOUT_ENV}); is it still "
                                  "running?", path)
            if now - last_note > 300:
                log.info("%s: still waiting for %s (%s)", self.info.describe(), who, path)
                last_note = now
            time.sleep(self.poll)

    def close(self) -> None:
        """Rank 0, after the last message: remove the message files of this run."""
        if self._files is not None and self.info.is_main:
            shutil.rmtree(self._files, ignore_errors=True)
            with contextlib.suppress(OSError):
                self._files.parent.rmdir()  # only when empty


def failures(reports: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The error messages of the ranks that reported ``ok: False``."""
    return [f"rank {i}: {r.get('error') or 'failed'}" for i, r in enumerate(reports or [])
            if not r.get("ok", False)]


def gather_picks(coordinator: Coordinator, name: str, picks: Any, n_micrographs: int, order: Sequence[str],
                 combine: bool, should_stop: Callable[[], bool] | None = None) -> tuple[Any, int, int] | None:
    """Every rank's picks to rank 0, after all ranks finished their shards.

    Returns None on the other ranks. Rank 0 gets ``(picks, n_picks, n_micrographs)`` over
    all ranks, raising the first failure any rank reported; with ``combine`` the picks of
    all ranks in the order of the micrograph names ``order`` (the order one process would
    write them in; values exact, through a float64 ``.npz`` per rank next to the
    coordination files), else None.
    """
    import numpy as np

    from ..io.picks import Picks

    part: Path | None = None
    if combine and coordinator.transport == "files" and not coordinator.info.is_main:
        assert coordinator._files is not None
        part = coordinator._files / f"{name}.{coordinator.info.rank}.npz"
        with atomic_path(part) as tmp, open(tmp, "wb") as handle:  # fsynced, zip checked, renamed
            np.savez(handle, micrograph=np.asarray(picks.micrograph, dtype=str), x=picks.x, y=picks.y,
                     score=picks.score)
    payload: dict[str, Any] = {"ok": True, "n_picks": len(picks), "n_micrographs": n_micrographs,
                               "part": str(part) if part else ""}
    if combine and coordinator.transport == "process group":
        payload["picks"] = (list(map(str, picks.micrograph)), picks.x, picks.y, picks.score)
    reports = coordinator.gather(name, payload, should_stop)
    if reports is None:
        return None
    errors = failures(reports)
    if errors:
        world = coordinator.info.world_size
        raise PupickError(f"{len(errors)} of {world} ranks failed; " + "; ".join(errors))
    n_picks = sum(int(r["n_picks"]) for r in reports)
    n_mics = sum(int(r["n_micrographs"]) for r in reports)
    if not combine:
        return None, n_picks, n_mics
    tables = [picks]
    for report in reports[1:]:
        if "picks" in report:
            names, x, y, score = report["picks"]
            tables.append(Picks(np.asarray(names, dtype=object), x, y, score))
        else:
            with np.load(report["part"], allow_pickle=False) as data:
                tables.append(Picks(data["micrograph"].astype(object), data["x"], data["y"], data["score"]))
    merged = Picks.concat(tables)
    index = {n: i for i, n in enumerate(order)}
    rank = np.array([index.get(str(n), len(index)) for n in merged.micrograph], dtype=np.int64)
    return merged.select(np.argsort(rank, kind="stable")), n_picks, n_mics
