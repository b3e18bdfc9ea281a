#!/usr/bin/env python3
"""Extraction speed and memory: micrographs/s and peak RSS vs micrograph size, batch size,
read-ahead mode and number of processes.

Every configuration runs in fresh worker processes (this script with ``--worker``), so each
has its own peak RSS (``ru_maxrss``) and nothing is cached between them. Throughput is
micrographs / wall time of the extraction itself (model loaded, first micrograph not yet
read, to the last pick), so process start-up is not counted; with several processes it is
all micrographs / (last rank's end - first rank's start).

Data: ``generate_demo_data`` micrographs (1.5 A/px, 150 A particles, so the default
downsampling makes a 4096^2 micrograph a 983^2 working image), cached in the workdir. The
model: ``--model`` or a resnet8 trained for a few steps on 1024^2 demo micrographs (cached).

Example (a few minutes on 2 cores)::

    python benchmarks/bench_extract.py --sizes 1024,2048,4096 --n 4 --batch-sizes 1,4 --procs 1,2

``--engine-path DIR`` runs the workers on another checkout's ``pupick_ext`` (e.g. from
``git worktree add /tmp/old <commit>``); ``--compare DIR`` runs a second one interleaved with
the first, repeat by repeat, so that a busy shared machine slows both alike (best of
``--repeat`` is shown).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, markdown_table, thread_env  # noqa: E402


# ------------------------------------------------------------------ worker (one process)
def worker(args: argparse.Namespace) -> None:
    if args.engine_path:
        sys.path.insert(0, str(args.engine_path))
    import torch

    import pupick_ext
    from pupick_ext import ExtractSettings, extract_iter, load_model, read_micrograph_list

    torch.set_num_threads(args.threads)
    api = sys.modules["pupick_ext.api"]
    if hasattr(api, "_PREFETCH"):
        api._PREFETCH = args.mode != "serial"
    rank, world = int(os.environ.get("PUPICK_RANK", "0")), int(os.environ.get("PUPICK_WORLD_SIZE", "1"))
    entries = read_micrograph_list(args.data)[rank::world]
    model = load_model(args.model)
    fields = dict(batch_size=args.batch_size, device="cpu", threshold=args.threshold)
    if "num_workers" in ExtractSettings.__dataclass_fields__:
        fields["num_workers"] = args.workers if args.mode == "workers" else 0
    if args.tile_size:
        fields["tile_size"] = args.tile_size
    settings = ExtractSettings(**fields)
    start = time.time()
    n_picks = sum(len(p) for _, p in extract_iter(model, entries, settings))
    end = time.time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"start": start, "end": end, "n": len(entries), "picks": n_picks, "peak_mib": peak,
                      "children_peak_mib": children, "engine": str(Path(pupick_ext.__file__).parent)}))


# ------------------------------------------------------------------ driver
def ensure_data(workdir: Path, size: int, n: int) -> Path:
    from pupick_ext import generate_demo_data

    out = workdir / f"data_{size}"
    mics = out / "Micrographs"
    if not (mics.is_dir() and len(list(mics.glob("*.mrc"))) >= n):
        print(f"generating {n} demo micrographs of {size}x{size} in {out}", flush=True)
        generate_demo_data(out, n_micrographs=n, preset="medium", seed=size, shape=(size, size))
    listing = workdir / f"list_{size}_{n}.txt"
    listing.write_text("\n".join(str(p) for p in sorted(mics.glob("*.mrc"))[:n]) + "\n")
    return listing


def ensure_model(workdir: Path) -> Path:
    path = workdir / "model" / "model.pupick"
    if path.is_file():
        return path
    from pupick_ext import PreprocessSettings, TrainSettings, generate_demo_data, train
    from pupick_ext.demo.demo import labelled_subset

    print("training a small model on 1024x1024 demo micrographs (cached for later runs)", flush=True)
    data = generate_demo_data(workdir / "train_data", n_micrographs=6, preset="medium", seed=0)
    labels = labelled_subset(data.truth, [m.name for m in data.micrographs], 30, seed=0)
    settings = TrainSettings(particle_diameter=data.particle_diameter, epochs=3, steps_per_epoch=30,
                             learning_rate=1e-3, device="cpu", patience=3)
    train(data.micrographs, labels, PreprocessSettings(), settings, workdir / "model")
    return path


def run_config(args, listing: Path, model: Path, procs: int, batch: int, mode: str, threads: int,
               engine: Path | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--data", str(listing),
           "--model", str(model), "--batch-size", str(batch), "--threads", str(threads), "--mode", mode,
           "--workers", str(args.workers), "--threshold", str(args.threshold)]
    if args.tile_size:
        cmd += ["--tile-size", str(args.tile_size)]
    if engine:
        cmd += ["--engine-path", str(engine)]
    env = thread_env(threads)
    ranks = []
    for r in range(procs):
        e = dict(env, PUPICK_RANK=str(r), PUPICK_WORLD_SIZE=str(procs))
        ranks.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e))
    results = []
    for p in ranks:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    n = sum(r["n"] for r in results)
    return {"wall": wall, "n": n, "mics_per_s": n / wall, "peak_mib": max(r["peak_mib"] for r in results),
            "picks": sum(r["picks"] for r in results), "engine": results[0]["engine"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "bench_out" / "bench_extract")
    p.add_argument("--model", type=Path, default=None, help="model.pupick (default: a small cached one)")
    p.add_argument("--sizes", default="1024,2048,4096", help="micrograph sides (px)")
    p.add_argument("--n", type=int, default=4, help="micrographs per size")
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--procs", default="1,2", help="numbers of processes (each gets threads/procs threads)")
    p.add_argument("--modes", default="thread", help="comma list of serial, thread, workers (read-ahead)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers for mode 'workers'")
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all (split over the processes)")
    p.add_argument("--threshold", type=float, default=-2.0)
    p.add_argument("--tile-size", type=int, default=0, help="ExtractSettings.tile_size (0: the default)")
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration (the best is shown)")
    p.add_argument("--engine-path", type=Path, default=None, help="import pupick_ext from this directory")
    p.add_argument("--compare", type=Path, default=None,
                   help="a second checkout to run interleaved with the first (e.g. the previous version)")
    p.add_argument("--compare-serial", action="store_true",
                   help="run the --compare engine in 'serial' mode (versions without read-ahead)")
    p.add_argument("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="thread", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model or ensure_model(args.workdir)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        listing = ensure_data(args.workdir, size, args.n)
        for procs in [int(s) for s in args.procs.split(",")]:
            for batch in [int(s) for s in args.batch_sizes.split(",")]:
                for mode in args.modes.split(","):
                    threads = max(1, args.threads // procs)
                    engines = [args.engine_path] + ([args.compare] if args.compare else [])
                    best: dict = {}
                    for _ in range(args.repeat):  # engines interleaved: a noisy machine hurts both alike
                        for k, engine in enumerate(engines):
                            res = run_config(args, listing, model, procs, batch,
                                             "serial" if k and args.compare_serial else mode, threads, engine)
                            if k not in best or res["mics_per_s"] > best[k]["mics_per_s"]:
                                best[k] = res
                    for k in sorted(best):
                        b = best[k]
                        row = [f"{size}^2", Path(b["engine"]).parent.name, procs, threads, batch,
                               "serial" if k and args.compare_serial else mode, f"{b['mics_per_s']:.3f}",
                               f"{b['wall'] / b['n']:.2f}", f"{b['peak_mib']:.0f}", b["picks"]]
                        rows.append(row)
                        print(" | ".join(map(str, row)), flush=True)
    print()
    print(f"{args.threads} CPU thread(s) in all; {args.n} micrographs per size; best of {args.repeat}")
    print(markdown_table(["size", "engine", "procs", "threads/proc", "batch", "read-ahead", "micrographs/s",
                          "s/micrograph", "peak RSS/proc (MiB)", "picks"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
