"""The training forward as one module: what DistributedDataParallel wraps."""

from __future__ import annotations

import torch
from torch import nn

from ..network.models import PickerNet

#: (batch, row, column) index tensors of the output locations the autoencoder reconstructs
AEIndex = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class TrainForward(nn.Module):
    """``forward(x, ae_index)`` -> (logits [B,1,h,w], reconstructions [k, RF*RF] or None).

    The reconstructions are of the feature vectors at ``ae_index``; one module computes
    both so that DistributedDataParallel sees every parameter used in one forward.
    """

    def __init__(self, net: PickerNet, channels_last: bool = True) -> None:
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        if channels_last:  # oneDNN's / cuDNN's fastest layout for these convolutions
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor,
                ae_index: AEIndex | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.net.features(x)
        logits = self.net.classify(features)
        if ae_index is None:
            return logits, None
        bi, yi, xi = ae_index
        rf = self.net.receptive_field
        with torch.autocast(x.device.type, enabled=False):  # the decoder runs in fp32, as before
            chosen = features[bi, :, yi, xi][:, :, None, None].float()
            recon = self.net.reconstruct(chosen).reshape(len(bi), rf * rf)
        return logits, recon
