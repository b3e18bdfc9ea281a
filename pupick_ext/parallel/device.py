"""Device selection and the settings that go with it (threads, mixed precision)."""

from __future__ import annotations

import contextlib
import logging

import torch

from ..errors import SettingsError

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
    """bf16 autocast on GPUs (mixed precision); a no-op on the CPU (scoring stays bit-exact there)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX512-BF16 or AMX), not emulated.

    Emulated bf16 is slower than fp32, so "auto" precision uses bf16 on the CPU only here.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or different torch build: assume not
        return False


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether training runs its convolutions in bf16: precision "bf16", or "auto" on a GPU or a bf16 CPU."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads for torch (0 keeps torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


_ALLOCATOR_TUNED = False
#: blocks up to this size come from the heap and are reused instead of being mapped fresh
_MMAP_THRESHOLD = 1 << 30
#: freed heap memory is kept (not trimmed) up to this much
_TRIM_THRESHOLD = (1 << 31) - 1


def tune_allocator() -> bool:
    """Let glibc reuse freed large blocks instead of mapping (and zero-filling) new ones.

    glibc serves allocations above 32 MiB with mmap and unmaps them on free, so every
    whole-micrograph activation (hundreds of MB) costs fresh page faults: a third of the
    CPU time of scoring a 1000^2 working image went to the kernel. Raising the mmap and
    trim thresholds (mallopt) keeps those blocks in the heap for the next layer and the
    next micrograph. The process then keeps its peak memory until it exits. No-op outside
    glibc, when already done, or with ``PUPICK_TUNE_MALLOC=0``. Returns whether it applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import os
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("PUPICK_TUNE_MALLOC", "1") == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):
            return False
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, ctypes.c_int(_MMAP_THRESHOLD)) == 1
        ok = libc.mallopt(m_trim_threshold, ctypes.c_int(_TRIM_THRESHOLD)) == 1 and ok
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    if ok:
        log.debug("glibc malloc: mmap threshold %d, trim threshold %d", _MMAP_THRESHOLD, _TRIM_THRESHOLD)
    return ok
