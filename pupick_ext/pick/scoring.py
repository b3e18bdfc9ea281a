"""Whole-micrograph score maps: batched, tiled for large images, on CPU or GPU.

Scoring runs an inference copy of the network (:class:`InferenceNet`), built once per
call to :func:`score_batch` (or once per extraction run and passed in):

* batch norm is folded into the convolution before it (``fuse_conv_bn_eval``), so each
  layer is one convolution with a bias; ReLU and the residual addition run in place;
* activations are channels-last (NHWC): oneDNN's fastest fp32 layout on CPUs (about 1.3x
  on the convolutions of ResNet8 here) and the tensor-core layout on GPUs;
* the 1x1 classifier is a multiply-and-sum over channels instead of a convolution with one
  output channel, whose CPU kernel gives results that depend on the number of threads.

**Exactness.** On the CPU scoring is fp32 and deterministic: the same micrograph gets
bit-identical logits whatever the number of threads, the batch it is scored in, and the
tile size (tiles read an overlap of the receptive-field radius; the convolutions are
valid, so tiling changes no value). That is what makes one process and N processes
(``pupick_ext.parallel.distributed``) write byte-identical coordinate files. Against the plain
``PickerNet`` forward (unfused, NCHW) logits differ only by float rounding, ~1e-6
(tests hold them to 1e-4), which moves no pick on the test data.

**GPU.** With ``mixed_precision`` (the default) the convolutions run under bf16 autocast:
logits then differ from fp32 by up to ~0.07 (99% within 0.02; bf16 keeps 8 bits of
mantissa), which can move a pick whose score is within that of the threshold or of a
neighbour inside the NMS radius; positions of clear picks do not change. Measured with
CPU bf16 on three 4096^2 demo micrographs: 90-94% of the picks above a permissive
threshold at identical positions, the same average precision (benchmarks/README.md).
``mixed_precision=False`` keeps fp32.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..network.models import PickerNet, _ResidualBlock, score_map
from ..parallel.device import autocast

__all__ = ["InferenceNet", "score_batch", "score_image"]

#: output pixels per forward pass on the CPU (several small images share one; see score_batch)
CPU_PASS_PIXELS = 1 << 20
#: rows of the feature map reduced per chunk in the classifier (bounds its temporary)
_CLASSIFIER_ROWS = 128


def _fused(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = fuse_conv_bn_eval(copy.deepcopy(conv).eval(), copy.deepcopy(bn).eval())
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


def _pointwise_op(name: str):  # noqa: ANN202
    """oneDNN's convolution with a fused ReLU (/ addition) as torch.compile uses it, if this torch has it."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return getattr(ops._convolution_pointwise, name) if ops is not None else None
    except (AttributeError, RuntimeError):
        return None


def _conv_relu(conv: nn.Conv2d, x: Tensor, fuse: bool) -> Tensor:
    """relu(conv(x)); on the CPU as one oneDNN call (ReLU applied as the output is written)."""
    if fuse and x.device.type == "cpu" and x.dtype == torch.float32:
        op = _pointwise_op("default")
        if op is not None:
            return op(x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                      conv.groups, "relu", [None], "")
    return conv(x).relu_()


def _conv_add_relu(conv: nn.Conv2d, x: Tensor, other: Tensor, fuse: bool) -> Tensor:
    """relu(conv(x) + other); fused on the CPU when ``other`` is a dense channels-last tensor."""
    if (fuse and x.device.type == "cpu" and x.dtype == torch.float32 and other.dtype == torch.float32
            and other.is_contiguous(memory_format=torch.channels_last)):
        op = _pointwise_op("binary")
        if op is not None:
            return op(x, other, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                      list(conv.dilation), conv.groups, "add", None, "relu", [None], "")
    return conv(x).add_(other).relu_()


class _ConvReLU(nn.Module):
    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = _fused(conv, bn)
        self.fuse_pointwise = False

    def forward(self, x: Tensor) -> Tensor:
        return _conv_relu(self.conv, x, self.fuse_pointwise)


class _Residual(nn.Module):
    def __init__(self, block: _ResidualBlock) -> None:
        super().__init__()
        self.conv1 = _fused(block.conv1, block.bn1)
        self.conv2 = _fused(block.conv2, block.bn2)
        self.crop = block.crop
        self.project: nn.Module | None = None
        if block.project is not None:
            conv, bn = block.project[0], block.project[1]  # _ResidualBlock: Sequential(Conv2d, BatchNorm2d)
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            self.project = _fused(conv, bn)
        self.fuse_pointwise = False

    def forward(self, x: Tensor) -> Tensor:
        y = _conv_relu(self.conv1, x, self.fuse_pointwise)
        c = self.crop
        skip = x[..., c : x.shape[-2] - c, c : x.shape[-1] - c]
        if self.project is not None:
            skip = self.project(skip)
        return _conv_add_relu(self.conv2, y, skip, self.fuse_pointwise)


class InferenceNet(nn.Module):
    """A frozen, fused copy of a :class:`PickerNet` for scoring (see the module docstring).

    ``forward(x)``: x [B,1,H,W] -> logits [B,H-RF+1,W-RF+1] (float32), like
    ``PickerNet.forward(x)[:, 0]``. Build with :meth:`from_net`; the source network must
    be in eval mode and is not changed.
    """

    # buffers registered in __init__ (declared here for the type checker: nn.Module's
    # __getattr__ would give them the type Tensor | Module)
    weight: Tensor
    bias: Tensor

    def __init__(self, stages: Sequence[_ConvReLU | _Residual], weight: Tensor, bias: Tensor,
                 receptive_field: int, channels_last: bool = True) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.register_buffer("weight", weight.detach().reshape(-1).clone())
        self.register_buffer("bias", bias.detach().reshape(-1).clone())
        self.receptive_field = int(receptive_field)
        self.channels_last = channels_last
        if channels_last:
            # nn.Module.to takes memory_format at run time; torch's typed overloads leave it out
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @classmethod
    def from_net(cls, net: PickerNet, channels_last: bool = True) -> InferenceNet | None:
        """The fused copy, or None when ``net`` has layers this fusion does not know."""
        if net.training:
            raise ValueError("InferenceNet.from_net needs the network in eval mode")
        stages: list[_ConvReLU | _Residual] = []
        for layer in net.body:
            if isinstance(layer, _ResidualBlock):
                stages.append(_Residual(layer))
            elif (isinstance(layer, nn.Sequential) and len(layer) == 3 and isinstance(layer[0], nn.Conv2d)
                  and isinstance(layer[1], nn.BatchNorm2d) and isinstance(layer[2], nn.ReLU)):
                stages.append(_ConvReLU(layer[0], layer[1]))
            else:
                return None
        classifier = net.classifier
        if not (isinstance(classifier, nn.Conv2d) and classifier.kernel_size == (1, 1)
                and classifier.out_channels == 1 and classifier.bias is not None):
            return None
        device = classifier.weight.device
        engine = cls(stages, classifier.weight, classifier.bias, net.receptive_field,
                     channels_last).to(device)
        engine.set_pointwise_fusion(_fusion_works())
        return engine

    def set_pointwise_fusion(self, enabled: bool) -> None:
        """Use oneDNN's fused convolution + ReLU (+ residual addition) on the CPU.

        Same values, fewer passes over memory.
        """
        for stage in self.stages:
            assert isinstance(stage, (_ConvReLU, _Residual))  # the only stages __init__ is given
            stage.fuse_pointwise = bool(enabled)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for stage in self.stages:
            x = stage(x)
        return self._classify(x)

    def _classify(self, features: Tensor) -> Tensor:
        """sum_c w_c f_c + b, reduced over the channel axis in a fixed order (thread-invariant)."""
        f = features.float().permute(0, 2, 3, 1)  # [B,H,W,C]; a view when channels-last
        out = f.new_empty(f.shape[:3])
        for y0 in range(0, f.shape[1], _CLASSIFIER_ROWS):
            rows = slice(y0, y0 + _CLASSIFIER_ROWS)
            torch.sum(f[:, rows] * self.weight, dim=-1, out=out[:, rows])
        return out.add_(self.bias)


_FUSION_OK: bool | None = None


@torch.inference_mode()
def _fusion_works() -> bool:
    """Whether the fused oneDNN ops exist here and give bit-identical results (checked once)."""
    global _FUSION_OK
    if _FUSION_OK is None:
        try:
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(1, 4, 12, 12, generator=gen).contiguous(memory_format=torch.channels_last)
            with torch.random.fork_rng(devices=[]):  # never disturb the caller's random stream
                conv = nn.Conv2d(4, 4, 3, dilation=2).eval()
            # nn.Module.to takes memory_format at run time; torch's typed overloads leave it out
            conv = conv.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            other = torch.randn(1, 4, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
            _FUSION_OK = (torch.equal(_conv_relu(conv, x, True), conv(x).relu_())
                          and torch.equal(_conv_add_relu(conv, x, other, True), conv(x).add_(other).relu_()))
        except Exception:  # noqa: BLE001 - any failure: use the unfused path
            _FUSION_OK = False
    return _FUSION_OK


def _forward_tiled(engine: InferenceNet | PickerNet, stack: Tensor, tile_size: int | None) -> Tensor:
    """Logits [B,H,W] of a normalized stack [B,1,H,W], tile by tile (same values as untiled)."""
    if not isinstance(engine, InferenceNet):
        return score_map(engine, stack, tile_size=tile_size)
    r = engine.receptive_field // 2
    padded = F.pad(stack, (r, r, r, r))
    height, width = stack.shape[-2:]
    if tile_size is None or (tile_size >= height and tile_size >= width):
        return engine(padded)
    out = torch.empty((stack.shape[0], height, width), dtype=torch.float32, device=stack.device)
    for y0 in range(0, height, tile_size):
        y1 = min(height, y0 + tile_size)
        for x0 in range(0, width, tile_size):
            x1 = min(width, x0 + tile_size)
            out[:, y0:y1, x0:x1] = engine(padded[..., y0 : y1 + 2 * r, x0 : x1 + 2 * r])
    return out


def prepare_engine(net: PickerNet | InferenceNet, device: torch.device) -> InferenceNet | PickerNet:
    """The network to score with on ``device``: a fused :class:`InferenceNet` when possible."""
    if isinstance(net, InferenceNet):
        return net.to(device)
    net.eval()
    engine = InferenceNet.from_net(net)
    return (engine if engine is not None else net).to(device)


#: symmetry counts :func:`score_batch` accepts: none, the half turn, the quarter turns, all 8
SYMMETRIES = (1, 2, 4, 8)


def _symmetrized(engine: InferenceNet | PickerNet, stack: Tensor, tile_size: int | None,
                 symmetries: int) -> Tensor:
    """The mean logit map over ``symmetries`` transforms of the square (each scored, then turned back).

    A particle's score should not depend on which way the micrograph is turned, but a
    network trained on a few hundred particles is only approximately invariant; averaging
    over the turns and mirrors removes that noise from the score map.
    """
    if symmetries not in SYMMETRIES:
        raise ValueError(f"symmetries must be one of {SYMMETRIES}")
    turns = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3), 8: (0, 1, 2, 3)}[symmetries]
    mirrors = (False, True) if symmetries == 8 else (False,)
    total = None
    for mirror in mirrors:
        base = stack.flip(-1) if mirror else stack
        for k in turns:
            view = torch.rot90(base, k, dims=(-2, -1)) if k else base
            logits = _forward_tiled(engine, view.contiguous(), tile_size).float()
            logits = torch.rot90(logits, -k, dims=(-2, -1)) if k else logits
            logits = logits.flip(-1) if mirror else logits
            total = logits if total is None else total + logits
    assert total is not None
    return total / (len(turns) * len(mirrors)) if symmetries > 1 else total


@torch.inference_mode()
def score_batch(net: PickerNet | InferenceNet, images: Sequence[np.ndarray | Tensor], device: torch.device,
                tile_size: int | None = None, mixed_precision: bool = True,
                symmetries: int = 1) -> list[Tensor]:
    """Logit maps (float32, on ``device``) for normalized images of any sizes.

    With ``symmetries`` > 1 each map is the mean over that many turns/mirrors of the image
    (see :func:`_symmetrized`); 1 scores the image as it is.

    Equal-sized images share forward passes, as many at a time as keep one pass within
    ``tile_size**2`` output pixels on a GPU, :data:`CPU_PASS_PIXELS` on the CPU (the memory
    bound; a larger image is tiled). On the CPU a bigger pass is no faster (one working
    micrograph already keeps every core busy) and only costs memory. Pass a prepared
    :class:`InferenceNet` to avoid re-fusing the network on every call.
    """
    engine = prepare_engine(net, device)
    out: dict[int, Tensor] = {}
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault((int(image.shape[-2]), int(image.shape[-1])), []).append(i)
    for (h, w), indices in by_shape.items():
        budget = tile_size * tile_size if tile_size else None
        if device.type == "cpu":
            budget = min(budget or CPU_PASS_PIXELS, CPU_PASS_PIXELS)
        per_pass = max(1, budget // (h * w)) if budget else len(indices)
        for start in range(0, len(indices), per_pass):
            chunk = indices[start : start + per_pass]
            stack = torch.stack([torch.as_tensor(images[i]) for i in chunk])[:, None]
            if device.type == "cuda":
                stack = stack.pin_memory().to(device, non_blocking=True)
            else:
                stack = stack.to(device)
            with autocast(device, mixed_precision):
                maps = _symmetrized(engine, stack, tile_size, symmetries)
            for k, i in enumerate(chunk):
                out[i] = maps[k]
    return [out[i] for i in range(len(images))]


def score_image(net: PickerNet, image: np.ndarray, device: torch.device,
                tile_size: int | None = None) -> np.ndarray:
    """One logit map as a numpy array (convenience for tests and reports)."""
    return score_batch(net, [image], device, tile_size)[0].cpu().numpy()
