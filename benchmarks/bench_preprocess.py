#!/usr/bin/env python3
"""Preprocessing throughput and peak memory: read MRC -> Fourier-crop downsample -> GMM normalize.

The script first writes ``--n`` synthetic float32 micrographs of ``--size`` x ``--size`` pixels
(MRC mode 2, a different gain each) to a temporary directory; that is not timed. Then:

1. **Breakdown, in this process** — for each micrograph ``read_micrograph`` (read + validation)
   and ``downsample`` by ``--factor`` (torch rfft2 crop + validation of the working image), then
   one ``fit_normalization`` (shared GMM fit on a pixel subsample of every working image), then
   ``normalize_image`` for each (per-micrograph gain fit + posterior-weighted standardization).
   The sum of the stages gives the throughput in micrographs/s.
2. **End to end, in a fresh child process** — ``prepare_micrographs`` (what ``pupick train`` and
   ``pupick preprocess`` run) on the same files, timed, with the child's peak resident memory
   (``ru_maxrss`` from ``os.wait4``), its resident memory after imports (the baseline of Python +
   torch + numpy), and the peak of the Python/numpy heap seen by ``tracemalloc`` (torch's own
   buffers, e.g. the FFT spectra, are not traced, so RSS is the real figure).

The input files were just written, so reads come from the page cache: the read figure is the
cost of parsing/copying, not of the disk.

Example::

    python benchmarks/bench_preprocess.py --n 6 --size 4096 --factor 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _maxrss_mib(value_kib: int) -> float:
    return value_kib / (2**20 if sys.platform == "darwin" else 1024)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=6, help="number of micrographs (default 6)")
    parser.add_argument("--size", type=int, default=4096, help="micrograph side in pixels (default 4096)")
    parser.add_argument("--factor", type=float, default=8.0, help="downsampling factor (default 8)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch/BLAS (default 0: the library default, all cores)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to write the inputs (default: a temporary directory, removed afterwards)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--skip-child", action="store_true", help="skip the end-to-end child-process measurement"
    )
    parser.add_argument(
        "--child", type=Path, default=None, help=argparse.SUPPRESS
    )  # internal: the child's inputs
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 16 or args.factor < 1 or args.threads < 0:
        parser.error("need --n >= 1, --size >= 16, --factor >= 1, --threads >= 0")
    return args


def _pin_threads(threads: int) -> None:
    """Before numpy/torch are imported: every common thread knob, then torch itself."""
    if threads > 0:
        for key in THREAD_VARS:
            os.environ[key] = str(threads)


def _set_torch_threads(threads: int) -> int:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def write_inputs(directory: Path, n: int, size: int, seed: int) -> list[Path]:
    """``n`` float32 micrographs: Gaussian noise + low-frequency ice gradient, gain 0.5..2."""
    import mrcfile
    import numpy as np

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    paths = []
    for i in range(n):
        gain = float(rng.uniform(0.5, 2.0))
        image = rng.standard_normal((size, size), dtype=np.float32)
        image += 0.3 * ramp[None, :] + 0.2 * ramp[:, None] + 10.0
        image *= gain
        path = directory / f"bench_{i:03d}.mrc"
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(image)
            mrc.voxel_size = 1.0
        paths.append(path)
    return paths


def breakdown(paths: list[Path], factor: float, seed: int) -> dict:
    """Time each stage in this process; returns seconds per stage and the working shape."""
    import numpy as np

    from pupick_ext.io.micrograph import read_micrograph, validate_pixels
    from pupick_ext.prep.downsample import downsample
    from pupick_ext.prep.preprocess import fit_normalization, normalize_image

    downsample(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), 2.0)  # torch FFT warm-up
    times = {"read": 0.0, "downsample": 0.0, "gmm_fit": 0.0, "normalize": 0.0}
    working = []
    for path in paths:
        start = time.perf_counter()
        micrograph = read_micrograph(path)
        mid = time.perf_counter()
        image, _scale = downsample(micrograph.data, factor)
        validate_pixels(image, path)
        end = time.perf_counter()
        del micrograph
        times["read"] += mid - start
        times["downsample"] += end - mid
        working.append(image)
    start = time.perf_counter()
    gmm = fit_normalization(working, seed)
    times["gmm_fit"] = time.perf_counter() - start
    start = time.perf_counter()
    normalized = [normalize_image(image, "gmm", gmm, seed) for image in working]
    times["normalize"] = time.perf_counter() - start
    assert all(out.shape == working[0].shape for out in normalized[:1])
    return {"seconds": times, "working_shape": list(working[0].shape), "gmm": gmm.to_dict()}


def child_main(args: argparse.Namespace) -> int:
    """End-to-end ``prepare_micrographs`` in a fresh process; prints one JSON line."""
    import tracemalloc

    _set_torch_threads(args.threads)
    from pupick_ext import MicrographEntry, PreprocessSettings
    from pupick_ext.prep.preprocess import prepare_micrographs

    entries = [MicrographEntry(p) for p in sorted(args.child.glob("*.mrc"))]
    settings = PreprocessSettings(downsample=args.factor, normalization="gmm", seed=args.seed)
    baseline = _rss_mib()
    baseline_peak = _maxrss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    tracemalloc.start()
    start = time.perf_counter()
    prepared, _gmm = prepare_micrographs(entries, settings)
    wall = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "n": len(prepared),
                "wall_s": wall,
                "rss_after_imports_mib": baseline,
                "maxrss_before_mib": baseline_peak,
                "maxrss_mib": _maxrss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
                "tracemalloc_peak_mib": traced_peak,
            }
        )
    )
    return 0


def run_child(directory: Path, args: argparse.Namespace) -> dict:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(directory),
        "--factor",
        str(args.factor),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    env = dict(os.environ)
    if args.threads > 0:
        env.update({key: str(args.threads) for key in THREAD_VARS})
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"child process failed (exit {proc.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    result["wait4_maxrss_mib"] = _maxrss_mib(usage.ru_maxrss)
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _pin_threads(args.threads)
    if args.child is not None:
        return child_main(args)

    import numpy as np

    threads = _set_torch_threads(args.threads)
    import pupick_ext

    owned = args.workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="pupick_bench_") if owned else None
    directory = Path(tmp.name) if tmp is not None else args.workdir
    try:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"pupick {pupick_ext.__version__}  numpy {np.__version__}  torch threads {threads}", end="")
        print(f"  cpus {cpus}")
        print(f"writing {args.n} synthetic {args.size}x{args.size} float32 MRC files to {directory}", end="")
        print(" (not timed) ...", flush=True)
        start = time.perf_counter()
        paths = write_inputs(directory, args.n, args.size, args.seed)
        mib_each = paths[0].stat().st_size / 2**20
        print(f"  {mib_each:.1f} MiB each, {time.perf_counter() - start:.1f} s", flush=True)

        rss_before = _rss_mib()
        result = breakdown(paths, args.factor, args.seed)
        seconds = result["seconds"]
        total = sum(seconds.values())
        maxrss = _maxrss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

        h, w = result["working_shape"]
        print(
            f"\nbreakdown (this process): {args.n} micrographs {args.size}x{args.size} -> {h}x{w} "
            f"(factor {args.factor:g})"
        )
        print(f"  {'stage':<12} {'total s':>9} {'ms / mic':>10} {'share':>7}")
        for stage, label in (
            ("read", "read"),
            ("downsample", "FFT crop"),
            ("gmm_fit", "GMM fit"),
            ("normalize", "normalize"),
        ):
            s = seconds[stage]
            print(f"  {label:<12} {s:9.3f} {1000 * s / args.n:10.1f} {100 * s / total:6.1f}%")
        print(f"  {'total':<12} {total:9.3f} {1000 * total / args.n:10.1f}")
        rate = args.n * mib_each / total
        print(f"  throughput   {args.n / total:.2f} micrographs/s  ({rate:.0f} MiB/s of input)")
        print(f"  peak RSS of this process (ru_maxrss) {maxrss:.0f} MiB (before: {rss_before:.0f} MiB)")

        report = {
            "n": args.n,
            "size": args.size,
            "factor": args.factor,
            "threads": threads,
            "breakdown": result,
            "throughput_mic_per_s": args.n / total,
            "maxrss_mib": maxrss,
        }
        if not args.skip_child:
            child = run_child(directory, args)
            report["end_to_end"] = child
            print("\nend to end (prepare_micrographs in a fresh process):")
            print(
                f"  {child['n']} micrographs in {child['wall_s']:.3f} s = {child['n'] / child['wall_s']:.2f} "
                f"micrographs/s (process incl. start-up and imports: {child['process_wall_s']:.1f} s)"
            )
            peak, base = child["wait4_maxrss_mib"], child["rss_after_imports_mib"]
            print(f"  peak RSS {peak:.0f} MiB; after imports {base:.0f} MiB", end="")
            print(f"; so preprocessing adds {peak - base:.0f} MiB")
            print(
                f"  tracemalloc peak (numpy / Python heap, not torch buffers) "
                f"{child['tracemalloc_peak_mib']:.0f} MiB"
            )
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
            print(f"\nwrote {args.json}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
