"""Choices of the job's parameters (no engine import, so --help and early failures stay cheap)."""

MODES: tuple[str, ...] = ("train", "extract", "train+extract")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DEFAULT_SUFFIX = "pupick"
