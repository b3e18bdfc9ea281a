"""Rank collectives for DistributedDataParallel training, each a no-op for one process.

Training under torchrun runs one process per rank; rank 0 validates, checkpoints and
writes. These helpers are the only places the loop talks to the other ranks, so a
single-process run never touches ``torch.distributed``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of an initialized torch.distributed process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself for one process)."""
    if rank_and_world()[1] == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    world_size = rank_and_world()[1]
    if world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is True on any rank, so all ranks stop at the same step.

    ``device`` is the training device: NCCL reduces only tensors on the GPU.
    """
    if rank_and_world()[1] == 1:
        return flag
    import torch.distributed as dist

    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=where)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def sync_from_main(net: nn.Module) -> None:
    """Every rank takes rank 0's weights and batch-norm statistics."""
    if rank_and_world()[1] == 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in net.state_dict().values():
            dist.broadcast(tensor, src=0)


def barrier() -> None:
    """Wait for every rank (a no-op for one process)."""
    if rank_and_world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()
