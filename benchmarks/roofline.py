#!/usr/bin/env python3
"""How close scoring runs to the hardware: FLOPs per micrograph / measured throughput.

FLOPs are 2 x multiply-accumulates. ``nominal`` = 2 x ``models.macs_per_pixel`` x working
pixels (the per-output-pixel cost, exact for large images); ``actual`` counts every
convolution at the size it really runs (the zero-padded border of RF//2 and the larger
maps of early layers included), from forward hooks. The hardware limit is measured, not
taken from a data sheet: the best of several timings of a large dense 3x3 convolution
(64 -> 64 channels, 1024^2, channels-last fp32: the shape of ResNet8's widest layer) and,
for reference, of a 2048^2 fp32 matrix product. Scoring time is ``scoring.score_batch``
on one working image (fused network, as extraction runs it), best of ``--repeat``.

    python benchmarks/roofline.py --sizes 256,512,983 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table  # noqa: E402


def best_time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def actual_flops(net, size: int) -> float:
    """2 x MACs of every convolution of the classifier path at the shapes it runs on for a size^2 image."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    total = 0.0

    def hook(module, _inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += (2.0 * kh * kw * module.in_channels // module.groups * module.out_channels
                  * output[0, 0].numel() * output.shape[0])

    handles = [m.register_forward_hook(hook) for m in list(net.body.modules()) + [net.classifier]
               if isinstance(m, nn.Conv2d)]
    r = net.receptive_field // 2
    with torch.inference_mode():
        net(F.pad(torch.zeros(1, 1, size, size), (r, r, r, r)))
    for h in handles:
        h.remove()
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512,983", help="working image sides (983: a 4096^2 micrograph at "
                                                          "1.5 A/px with 150 A particles)")
    p.add_argument("--model", default="resnet8")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from pupick_ext.network.models import build_model, macs_per_pixel
    from pupick_ext.parallel.device import resolve_device, tune_allocator
    from pupick_ext.pick.scoring import prepare_engine, score_batch

    torch.set_num_threads(args.threads)
    tune_allocator()
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # ---- hardware: dense conv and matrix product
    with torch.inference_mode():
        x = torch.randn(1, 64, 1024, 1024, device=device).contiguous(memory_format=torch.channels_last)
        w = torch.randn(64, 64, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
        conv_flops = 2.0 * 64 * 64 * 9 * 1022 * 1022
        conv_s = best_time(lambda: (F.conv2d(x, w), sync()), args.repeat)
        conv_d_s = best_time(lambda: (F.conv2d(x, w, dilation=4), sync()), args.repeat)
        a = torch.randn(2048, 2048, device=device)
        mm_s = best_time(lambda: (a @ a, sync()), args.repeat)
    conv_gflops = conv_flops / conv_s / 1e9
    conv_d_gflops = 2.0 * 64 * 64 * 9 * 1016 * 1016 / conv_d_s / 1e9
    mm_gflops = 2.0 * 2048**3 / mm_s / 1e9
    print(f"device {device}, {args.threads} thread(s)")
    print(f"dense 3x3 conv 64->64 on 1024^2 (channels-last fp32): {conv_gflops:.0f} GFLOP/s "
          f"(dilation 4: {conv_d_gflops:.0f} GFLOP/s); 2048^2 matmul: {mm_gflops:.0f} GFLOP/s")

    torch.manual_seed(0)
    net = build_model(args.model, args.width).eval()
    macs = macs_per_pixel(net)
    engine = prepare_engine(net, device)
    print(f"{args.model} width {args.width}: {macs} MACs per output pixel, "
          f"receptive field {net.receptive_field}")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        image = np.random.default_rng(size).normal(size=(size, size)).astype(np.float32)
        nominal = 2.0 * macs * size * size
        actual = actual_flops(net, size)
        seconds = best_time(lambda image=image: (score_batch(engine, [image], device), sync()), args.repeat)
        achieved = actual / seconds / 1e9
        rows.append([f"{size}^2", f"{nominal / 1e9:.1f}", f"{actual / 1e9:.1f}", f"{seconds:.3f}",
                     f"{actual / (conv_gflops * 1e9):.3f}", f"{achieved:.0f}",
                     f"{100 * achieved / conv_gflops:.0f}%", f"{100 * achieved / mm_gflops:.0f}%"])
    print(markdown_table(["working image", "GFLOP nominal", "GFLOP actual", "scoring s",
                          "floor s (conv peak)", "achieved GFLOP/s", "of dense conv", "of matmul"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
