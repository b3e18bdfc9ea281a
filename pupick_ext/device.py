"""Device selection and the settings that go with it (threads, mixed precision)."""

from __future__ import annotations

import contextlib
import logging

import torch

from .errors import SettingsError

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the first CUDA device if there is one, else the CPU; 'cuda', 'cuda:1', 'cpu', or a GPU id."""
    name = str(name).strip().lower()
    if name.isdigit():
        name = f"cuda:{name}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SettingsError(f"device {name!r} asked for, but no CUDA GPU is available (use --device cpu)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"device {name!r} does not exist ({torch.cuda.device_count()} GPU(s) found)")
        return device
    if name == "cpu":
        return torch.device("cpu")
    raise SettingsError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs (mixed precision); a no-op on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads for torch (0 keeps torch's default)."""
    if n > 0:
        torch.set_num_threads(n)
