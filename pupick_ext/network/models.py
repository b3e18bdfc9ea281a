"""Fully-convolutional particle classifiers (the ``g = c(f(x))`` of the method).

Every convolution is *valid* (unpadded) with stride 1, so a network with receptive field
``RF`` maps an input of ``H x W`` to logits of ``(H-RF+1) x (W-RF+1)``: output pixel
``(i, j)`` sees exactly the input crop ``x[i:i+RF, j:j+RF]``, centred at ``(i+r, j+r)``
with ``r = RF // 2``. The same weights therefore score one ``RF x RF`` training crop (one
output pixel) and a whole micrograph (one output per pixel, see :func:`score_map`).

Dilation grows the receptive field without striding or pooling. Dilations are chosen so
that the set of input offsets reached stays contiguous (a 3x3 conv of dilation d applied to
a field of half-width h keeps it gap-free when d <= 2h + 1), so no pixel of the field is
skipped ("gridding"); a test checks every output in the window responds to a pixel.

Architectures (``w`` = width):

========  ===========================================================  ====
name      layers                                                       RF
========  ===========================================================  ====
resnet8   7x7 stem, 3 residual blocks of two 3x3 convs, dilations       71
          (1,1) (2,4) (8,16), widths w w 2w, 1x1 classifier
resnet16  7x7 stem, 7 residual blocks, dilations (1,1) (2,2) (4,4)      95
          (8,8) (4,4) (2,2) (1,1), widths w w w w w 2w 2w, classifier
conv31    7x7 stem + 3x3 convs with dilations 1 1 2 4 4                 31
conv63    7x7 stem + 3x3 convs with dilations 1 1 2 4 8 8 4             63
conv127   7x7 stem + 3x3 convs with dilations 1 1 2 4 8 16 16 8 4      127
========  ===========================================================  ====

Each convolution is followed by batch norm and ReLU (residual blocks add the centre-cropped
input, through a 1x1 projection when the width changes, before the second ReLU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SettingsError

__all__ = [
    "ARCHITECTURES",
    "PickerNet",
    "build_model",
    "input_crops",
    "macs_per_pixel",
    "score_map",
]

_STEM_KERNEL = 7


@dataclass(frozen=True)
class _Spec:
    """Layer plan: ``stages`` are (dilations, width multiplier); a residual stage has two convs."""

    residual: bool
    stages: tuple[tuple[tuple[int, ...], int], ...]


_SPECS: dict[str, _Spec] = {
    "resnet8": _Spec(True, (((1, 1), 1), ((2, 4), 1), ((8, 16), 2))),
    "resnet16": _Spec(
        True,
        (((1, 1), 1), ((2, 2), 1), ((4, 4), 1), ((8, 8), 1), ((4, 4), 1), ((2, 2), 2), ((1, 1), 2)),
    ),
    "conv31": _Spec(False, tuple(((d,), 1) for d in (1, 1, 2, 4, 4))),
    "conv63": _Spec(False, tuple(((d,), 1) for d in (1, 1, 2, 4, 8, 8, 4))),
    "conv127": _Spec(False, tuple(((d,), 1) for d in (1, 1, 2, 4, 8, 16, 16, 8, 4))),
}

#: Architecture names accepted by :func:`build_model`.
ARCHITECTURES: tuple[str, ...] = tuple(_SPECS)


def _receptive_field(spec: _Spec) -> int:
    """1 + the sum of (kernel - 1) * dilation over the convolution chain (3x3 convs add 2*d)."""
    return 1 + (_STEM_KERNEL - 1) + sum(2 * d for dilations, _ in spec.stages for d in dilations)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _ResidualBlock(nn.Module):
    """Two valid 3x3 convs (dilations d1, d2) plus the input cropped to the output's extent."""

    def __init__(self, cin: int, cout: int, d1: int, d2: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, dilation=d1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, dilation=d2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.crop = d1 + d2
        self.project: nn.Sequential | None = None
        if cin != cout:
            self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        c = self.crop
        skip = x[..., c : x.shape[-2] - c, c : x.shape[-1] - c]
        if self.project is not None:
            skip = self.project(skip)
        return F.relu(y + skip, inplace=True)


class PickerNet(nn.Module):
    """A fully-convolutional picker: ``features`` (f), ``classify`` (c), optional ``decoder`` (d).

    ``forward(x)``: x [B,1,H,W] -> logits [B,1,H-RF+1,W-RF+1]; logit (i, j) scores the input
    pixel (i+r, j+r), r = ``receptive_field // 2``. With ``autoencoder=True`` a per-pixel
    decoder (two 1x1 convs) reconstructs the RF x RF input crop of each output pixel from
    its feature vector (see :meth:`reconstruct`); it is only used as a training regulariser.
    """

    def __init__(self, name: str, width: int = 32, autoencoder: bool = False) -> None:
        super().__init__()
        if name not in _SPECS:
            raise SettingsError(f"unknown model {name!r}; choose from {', '.join(ARCHITECTURES)}")
        if int(width) != width or width < 1:
            raise SettingsError(f"model width must be a positive integer, got {width!r}")
        spec = _SPECS[name]
        self.name = name
        self.width = int(width)
        self.receptive_field: int = _receptive_field(spec)
        self.autoencoder = bool(autoencoder)

        layers: list[nn.Module] = [_conv_bn_relu(1, self.width, _STEM_KERNEL)]
        channels = self.width
        for dilations, multiplier in spec.stages:
            cout = self.width * multiplier
            if spec.residual:
                layers.append(_ResidualBlock(channels, cout, *dilations))
            else:
                layers.append(_conv_bn_relu(channels, cout, 3, dilations[0]))
            channels = cout
        self.body = nn.Sequential(*layers)
        #: number of feature channels fed to the classifier (and the decoder)
        self.feature_channels: int = channels
        self.classifier = nn.Conv2d(channels, 1, 1)
        self.decoder: nn.Module | None = None
        if self.autoencoder:
            rf = self.receptive_field
            self.decoder = nn.Sequential(
                nn.Conv2d(channels, channels, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, rf * rf, 1),
            )

    def features(self, x: Tensor) -> Tensor:
        """f(x): [B,1,H,W] -> [B, feature_channels, H-RF+1, W-RF+1]."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected input [B,1,H,W], got {tuple(x.shape)}")
        rf = self.receptive_field
        if x.shape[-2] < rf or x.shape[-1] < rf:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than the receptive field {rf}")
        return self.body(x)

    def classify(self, features: Tensor) -> Tensor:
        """c(f): features [B,C,h,w] -> logits [B,1,h,w]."""
        return self.classifier(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))

    def reconstruct(self, features: Tensor) -> Tensor:
        """d(f): features [B,C,h,w] -> reconstructions [B,h,w,RF,RF].

        Entry [b, i, j] reconstructs the input crop ``x[b, 0, i:i+RF, j:j+RF]``; compare it
        with :func:`input_crops` (same layout) in ``objectives.autoencoder_loss``.
        """
        if self.decoder is None:
            raise RuntimeError(f"{self.name} was built without autoencoder=True")
        rf = self.receptive_field
        out = self.decoder(features)  # [B, RF*RF, h, w]
        b, _, h, w = out.shape
        return out.permute(0, 2, 3, 1).reshape(b, h, w, rf, rf)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, width={self.width}, receptive_field={self.receptive_field}"


def build_model(name: str = "resnet8", width: int = 32, autoencoder: bool = False) -> PickerNet:
    """Build a fresh (randomly initialised) picker network by architecture name."""
    return PickerNet(name, width=width, autoencoder=autoencoder)


def input_crops(x: Tensor, receptive_field: int) -> Tensor:
    """The RF x RF input crop seen by every output pixel: x [B,1,H,W] -> [B,h,w,RF,RF].

    The reconstruction target of the autoencoder (same layout as :meth:`PickerNet.reconstruct`).
    For a training crop of exactly RF x RF it is just ``x`` reshaped to [B,1,1,RF,RF].
    """
    rf = int(receptive_field)
    patches = x.unfold(2, rf, 1).unfold(3, rf, 1)  # [B,1,h,w,RF,RF]
    return patches[:, 0]


@torch.no_grad()
def score_map(model: PickerNet, image: Tensor, tile_size: int | None = None) -> Tensor:
    """Logits for every input pixel: image [B,1,H,W] (normalized, mean ~0) -> [B,H,W].

    The image is zero-padded by r = RF//2 on each side (zero is the normalized mean, so
    pixels near the edge are scored as if the micrograph continued with average gray) and
    the network runs over it; output (i, j) is then the logit of the crop centred at input
    pixel (i, j). With ``tile_size`` the output is computed in tiles of that many pixels
    per side (each tile reads an overlap of r around it); as the convolutions are valid the
    result is identical, only peak memory drops. The model's train/eval mode is left as is
    (call ``model.eval()`` first). Runs without autograd.
    """
    if image.dim() == 3:
        image = image.unsqueeze(1)
    if image.dim() != 4 or image.shape[1] != 1:
        raise ValueError(f"expected image [B,1,H,W], got {tuple(image.shape)}")
    r = model.receptive_field // 2
    padded = F.pad(image, (r, r, r, r))
    height, width = image.shape[-2:]
    if tile_size is None or (tile_size >= height and tile_size >= width):
        return model(padded)[:, 0]
    if tile_size < 1:
        raise ValueError("tile_size must be positive")
    out = image.new_empty((image.shape[0], height, width))
    for y0 in range(0, height, tile_size):
        y1 = min(height, y0 + tile_size)
        for x0 in range(0, width, tile_size):
            x1 = min(width, x0 + tile_size)
            out[:, y0:y1, x0:x1] = model(padded[..., y0 : y1 + 2 * r, x0 : x1 + 2 * r])[:, 0]
    return out


def macs_per_pixel(model: PickerNet) -> int:
    """Multiply-accumulates per output pixel of the classifier path (stem to logit).

    Sums k*k*C_in*C_out/groups over the convolutions of ``body`` and ``classifier``
    (residual projections included). Batch norm (foldable into the convolutions), ReLU,
    additions and the training-only decoder are not counted. Exact for large images, where
    every layer's output is the size of the final output up to the receptive-field border.
    """
    total = 0
    for module in list(model.body.modules()) + list(model.classifier.modules()):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += kh * kw * (module.in_channels // module.groups) * module.out_channels
    return int(total)
