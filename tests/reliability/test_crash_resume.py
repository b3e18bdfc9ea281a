"""A job killed at any moment loses nothing it finished, and a re-run completes it exactly.

``pupick extract ... -o outdir/`` (one coordinate file per micrograph) and ``pupick-relion``
(extract mode) run as child processes and are killed with SIGKILL at seeded random moments: after
a random number of micrographs has been written (plus a random delay of up to 40 ms), or at a
random time of the run. After each kill every coordinate file present must be complete (it parses
and is byte-identical to the uninterrupted run's file; temporary ``.part`` files may remain and are
never read as outputs); the same command run again must finish the job, leaving exactly the files
of an uninterrupted run, byte for byte (RELION: the index then lists every micrograph).

Children are forked from a ``forkserver`` that imported pupick once (a killed child is a real
process, but starts in milliseconds); one trial per entry point runs the installed console script.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import starfile
from reliability_helpers import (
    coordinate_files,
    entry_point_child,
    files_under,
    forkserver_context,
    leftovers,
    python_env,
    run_pupick,
    run_relion,
    snapshot,
)

from pupick_ext import generate_demo_data, read_coordinates

N_TRIALS = 10  #: forked-child trials per entry point (seeded); plus one console-script trial each
N_MICROGRAPHS = 16
JOB = "External/job500/"
SKIP = (".png", "pupick_runs.json")  #: pictures and the run log are not outputs compared byte for byte


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    generate_demo_data(root, n_micrographs=N_MICROGRAPHS, preset="easy", seed=7, shape=(256, 256))
    return root


def _kill_at_random(start_child, outdir: Path, rng: random.Random, expected: int, duration: float) -> dict:
    """Start a child, SIGKILL it at a random moment; returns what happened."""
    proc, pid_of = start_child()
    started = time.monotonic()
    if rng.random() < 0.3:  # any moment of the run, start-up included
        time.sleep(rng.uniform(0, duration))
        moment = "at %.2f s" % (time.monotonic() - started)
    else:  # while micrographs are being written
        wanted = rng.randrange(0, expected)
        while len(coordinate_files(outdir)) < wanted and _alive(proc) and time.monotonic() - started < 60:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.04))
        moment = f"after {len(coordinate_files(outdir))} files"
    killed = _alive(proc)
    if killed:
        os.kill(pid_of(proc), signal.SIGKILL)
    _wait(proc)
    return {
        "killed": killed,
        "moment": moment,
        "files": len(coordinate_files(outdir)),
        "parts": len(leftovers(outdir)),
    }


def _alive(proc) -> bool:
    return proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()


def _wait(proc) -> None:
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=60)
    else:
        proc.join(timeout=60)


def _forked(ctx, kind: str, argv: list[str], cwd: Path, log: Path):
    def start():
        proc = ctx.Process(target=entry_point_child, args=(kind, argv, str(cwd), str(log)))
        proc.start()
        return proc, lambda p: p.pid

    return start


def _console(script: str, argv: list[str], cwd: Path):
    exe = Path(sys.executable).with_name(script)
    command = (
        [str(exe)]
        if exe.is_file()
        else [sys.executable, "-m", "pupick_ext.cli" if script == "pupick" else "relion_wrapper.cli"]
    )

    def start():
        proc = subprocess.Popen(
            [*command, *argv], cwd=cwd, env=python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return proc, lambda p: p.pid

    return start


def _check_complete(outdir: Path, reference: dict[str, bytes], root: Path) -> list[str]:
    """Problems with the files a killed run left (each must be whole: identical to the reference)."""
    problems = []
    for path in coordinate_files(outdir):
        rel = str(path.relative_to(root))
        try:
            read_coordinates(path, fmt="star")
        except Exception as exc:  # noqa: BLE001 - a torn file is what this test looks for
            problems.append(f"{rel} does not parse: {exc}")
            continue
        if path.read_bytes() != reference.get(rel):
            problems.append(f"{rel} differs from the uninterrupted run's")
    return problems


def _tally(name: str, results: list[dict]) -> None:
    killed = sum(r["killed"] for r in results)
    passed = sum(r["ok"] for r in results)
    print(
        f"\n{name}: {len(results)} trials, {killed} killed mid-run, {passed} passed "
        f"(nothing lost, re-run byte-identical); .part leftovers in {sum(r['parts'] > 0 for r in results)}"
    )
    for i, r in enumerate(results):
        print(
            f"  trial {i}: {'killed' if r['killed'] else 'finished'} {r['moment']}, {r['files']} files, "
            f"{r['parts']} .part{'' if r['ok'] else ' FAILED: ' + '; '.join(r['problems'])}"
        )


def test_pupick_extract_survives_sigkill(project: Path, good_model: Path) -> None:
    outdir = project / "picks"
    argv = [
        "-q",
        "extract",
        "-m",
        "micrographs_ctf.star",
        "--model",
        str(good_model),
        "-o",
        f"{outdir}/",
        "--threshold",
        "-8",
        "--device",
        "cpu",
    ]
    started = time.monotonic()
    reference_run = run_pupick(argv, project, outdir)
    duration = time.monotonic() - started
    assert reference_run.rc == 0, reference_run.text
    reference = snapshot(outdir)
    assert len(reference) == N_MICROGRAPHS and not leftovers(outdir)
    reference_picks = read_coordinates(outdir)

    ctx = forkserver_context()
    rng = random.Random(20240917)
    results = []
    for trial in range(N_TRIALS + 1):
        shutil.rmtree(outdir, ignore_errors=True)
        if trial < N_TRIALS:
            start = _forked(ctx, "pupick", argv, project, project / f"child_{trial}.log")
            result = _kill_at_random(start, outdir, rng, N_MICROGRAPHS, duration + 0.3)
        else:  # the installed command, start-up included (slower: imports torch)
            start = _console("pupick", argv, project)
            result = _kill_at_random(start, outdir, rng, N_MICROGRAPHS, duration + 3.0)
        problems = _check_complete(outdir, reference, outdir)
        rerun = run_pupick(argv, project, outdir)
        if rerun.rc != 0:
            problems.append(f"re-run failed: {rerun.err}")
        if snapshot(outdir) != reference:
            problems.append(f"re-run left {sorted(snapshot(outdir))}, not the uninterrupted run's files")
        picks = read_coordinates(outdir)  # the directory reader: .part files are not outputs
        if len(picks) != len(reference_picks):
            problems.append("reading the directory back gives other picks")
        results.append({**result, "ok": not problems, "problems": problems})
    _tally("pupick extract", results)
    assert all(r["ok"] for r in results), [r["problems"] for r in results if not r["ok"]]
    assert sum(r["killed"] for r in results) >= N_TRIALS // 2


def test_relion_extract_survives_sigkill(project: Path, good_model: Path) -> None:
    argv = [
        "--o",
        JOB,
        "--in_mics",
        "micrographs_ctf.star",
        "--mode",
        "extract",
        "--model",
        str(good_model),
        "--threshold",
        "-8",
        "--device",
        "cpu",
        "--j",
        "1",
        "--pictures",
        "0",
    ]
    job = project / JOB
    started = time.monotonic()
    reference_run = run_relion(argv[2:], project, JOB)
    duration = time.monotonic() - started
    assert reference_run.rc == 0, reference_run.text
    reference = snapshot(job, skip=SKIP)
    assert len(coordinate_files(job)) == N_MICROGRAPHS and "RELION_JOB_EXIT_SUCCESS" in reference

    ctx = forkserver_context()
    rng = random.Random(31415)
    results = []
    for trial in range(N_TRIALS + 1):
        shutil.rmtree(job, ignore_errors=True)
        if trial < N_TRIALS:
            start = _forked(ctx, "relion", argv, project, project / f"relion_child_{trial}.log")
            result = _kill_at_random(start, job, rng, N_MICROGRAPHS, duration + 0.3)
        else:
            start = _console("pupick-relion", argv, project)
            result = _kill_at_random(start, job, rng, N_MICROGRAPHS, duration + 3.0)
        problems = _check_complete(job, reference, job)
        if result["killed"] and [p for p in files_under(job) if p.name.startswith("RELION_JOB_EXIT")]:
            problems.append("a killed job left an exit marker")
        rerun = run_relion(argv[2:], project, JOB)
        if rerun.rc != 0:
            problems.append(f"re-run failed: {rerun.err}")
        if snapshot(job, skip=SKIP) != reference:
            got = snapshot(job, skip=SKIP)
            diff = sorted(k for k in set(got) | set(reference) if got.get(k) != reference.get(k))
            problems.append(f"re-run differs from the uninterrupted run in {diff}")
        index = starfile.read(job / "autopick.star", always_dict=True)["coordinate_files"]
        if len(index) != N_MICROGRAPHS:
            problems.append(f"the index lists {len(index)} of {N_MICROGRAPHS} micrographs")
        results.append({**result, "ok": not problems, "problems": problems})
    _tally("pupick-relion extract", results)
    assert all(r["ok"] for r in results), [r["problems"] for r in results if not r["ok"]]
    assert sum(r["killed"] for r in results) >= N_TRIALS // 2
