#!/usr/bin/env python3
"""Training speed: wall time to reach a held-out AP on the demo data, and seconds per step.

The protocol of ``compare_topaz.py`` (8 training + 4 test micrographs of the medium demo
preset, 1024^2 at 1.5 A/px, 20 labels per training micrograph, downsampling 4, the mean
true count as expected particles) so the figures can be set beside Topaz's. Training runs
in a fresh worker process (this script with ``--worker``) through ``pupick_ext.train``;
the worker records the wall time of preprocessing and of every epoch (steps plus
validation) and the held-out AP after it (pupick's early-stopping AP: held-out labelled
micrographs against their labels), then picks the 4 test micrographs with the final model
and scores them against the full truth (the AP compare_topaz.py reports).

"Time to AP x" = preprocessing + the epochs up to the first whose test-independent
held-out AP reaches x. ``--procs N`` trains with N processes (torchrun, gloo,
DistributedDataParallel), ``--engine-path DIR`` with another checkout, ``--precision
fp32,bf16`` once per arithmetic of the training convolutions (in one run, so the ratio holds).

    python benchmarks/bench_train.py --epochs 4 --steps-per-epoch 50 --target-ap 0.5 [--precision fp32,bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, markdown_table, thread_env  # noqa: E402

N_TRAIN, N_TEST, LABELS_PER_MICROGRAPH = 8, 4, 20


def worker(args: argparse.Namespace) -> None:
    if args.engine_path:
        sys.path.insert(0, str(args.engine_path))
    import numpy as np
    import torch

    import pupick_ext
    from pupick_ext import (
        ExtractSettings,
        PreprocessSettings,
        TrainSettings,
        evaluate,
        extract,
        generate_demo_data,
        train,
    )
    from pupick_ext.demo.demo import labelled_subset

    rank = int(os.environ.get("RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from pupick_ext.parallel.distributed import init_process_group, rank_info

        init_process_group(rank_info(), "cpu")
    torch.set_num_threads(args.threads)
    data = generate_demo_data(args.data, n_micrographs=N_TRAIN + N_TEST, preset="medium", seed=args.seed)
    train_mics, test_mics = data.micrographs[:N_TRAIN], data.micrographs[N_TRAIN:]
    labels = labelled_subset(data.truth, [m.name for m in train_mics], LABELS_PER_MICROGRAPH, args.seed)
    expected = float(np.mean([len(data.truth.for_micrograph(m.name)) for m in train_mics]))
    settings = TrainSettings(particle_diameter=data.particle_diameter, epochs=args.epochs,
                             steps_per_epoch=args.steps_per_epoch, learning_rate=1e-3, seed=args.seed,
                             expected_particles=expected, device="cpu", num_threads=args.threads,
                             patience=args.epochs,
                             **({} if args.precision == "auto" else {"precision": args.precision}))
    pre = PreprocessSettings(downsample=4.0, seed=args.seed)
    started = time.time()
    result = train(train_mics, labels, pre, settings, args.out)
    total = time.time() - started
    if rank != 0:
        return
    test_names = [m.name for m in test_mics]
    truth = data.truth.select(np.isin(data.truth.micrograph, test_names))
    picks = extract(result.model, test_mics, ExtractSettings(threshold=-10.0, device="cpu"))
    test_ap = evaluate(picks, truth, data.particle_diameter / 2 / data.pixel_size).average_precision
    epochs_s = sum(h["seconds"] for h in result.history)
    print(json.dumps({"total_s": total, "prep_and_final_s": total - epochs_s, "history": result.history,
                      "test_ap": test_ap, "engine": str(Path(pupick_ext.__file__).parent)}))


def run(args: argparse.Namespace, procs: int, engine: Path | None, precision: str) -> dict:
    out = args.workdir / f"run_{procs}_{int(time.time() * 1000)}"
    threads = max(1, args.threads // procs)
    cmd = [str(Path(__file__).resolve()), "--worker", "--data", str(args.workdir / "data"), "--out", str(out),
           "--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps_per_epoch),
           "--threads", str(threads), "--seed", str(args.seed), "--precision", precision]
    if engine:
        cmd += ["--engine-path", str(engine)]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(procs), *cmd]
    else:
        cmd = [sys.executable, *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads))
    if done.returncode != 0:
        raise SystemExit(f"training worker failed:\n{done.stderr[-4000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "bench_out" / "bench_train")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all (split over processes)")
    p.add_argument("--procs", default="1", help="comma list of process counts (torchrun DDP for > 1)")
    p.add_argument("--target-ap", type=float, default=0.5, help="held-out AP to time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine-path", type=Path, default=None, help="also run this checkout's pupick_ext")
    p.add_argument("--precision", default="auto",
                   help="comma list of training arithmetic: auto, fp32, bf16 (one run each)")
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    engines: list[Path | None] = [None] + ([args.engine_path] if args.engine_path else [])
    for engine in engines:
        runs = [(int(n), a) for n in args.procs.split(",") for a in args.precision.split(",")]
        for procs, precision in runs:
            res = run(args, procs, engine, precision)
            cum, reached = res["prep_and_final_s"], None
            aps = []
            for h in res["history"]:
                cum += h["seconds"]
                aps.append(f"{h.get('ap', float('nan')):.2f}")
                if reached is None and h.get("ap", -1) >= args.target_ap:
                    reached = cum
            steps = args.epochs * args.steps_per_epoch
            step_s = (sum(h["seconds"] for h in res["history"])
                      / max(1, len(res["history"]) * args.steps_per_epoch))
            rows.append([Path(res["engine"]).parent.name or res["engine"], procs, precision,
                         f"{res['total_s']:.1f}",
                         f"{step_s:.3f}", "-" if reached is None else f"{reached:.1f}", " ".join(aps),
                         f"{res['test_ap']:.3f}", steps])
            print(" | ".join(map(str, rows[-1])), flush=True)
    print()
    print(markdown_table(["engine", "procs", "precision", "train wall s", "s/step (incl. validation)",
                          f"s to held-out AP {args.target_ap:g}", "held-out AP per epoch", "test AP (truth)",
                          "steps"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
