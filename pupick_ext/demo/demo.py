"""`pupick demo`: the whole workflow on built-in synthetic micrographs, in a few minutes on a CPU."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ..api import extract, train
from ..io.coordinates import write_coordinates
from ..io.fsio import write_atomic
from ..io.picks import Picks
from ..parallel.device import set_threads
from ..pick.baseline import dog_extract
from ..pick.evaluation import evaluate
from ..progress import ProgressReporter
from ..reports import plot_picks, plot_pr_curve, plot_threshold_table, plot_training
from ..settings import ExtractSettings, PreprocessSettings, TrainSettings
from .synthetic import generate_demo_data

log = logging.getLogger(__name__)

N_TRAIN, N_TEST = 8, 4
LABELS_PER_MICROGRAPH = 36  # 8 x 36 = 288 labelled particles, as a user would hand-pick
#: short: training starts from the shipped general model, which already knows noise, ice and carbon
DEMO_EPOCHS, DEMO_STEPS = 3, 20


def labelled_subset(truth: Picks, names: list[str], per_micrograph: int, seed: int) -> Picks:
    """A random subset of the true particles, as a user's partial hand-picking."""
    rng = np.random.default_rng(seed)
    parts = []
    for name in names:
        one = truth.for_micrograph(name)
        keep = np.sort(rng.permutation(len(one))[:per_micrograph])
        parts.append(one.select(keep))
    return Picks.concat(parts)


def run_demo(output: str | Path, preset: str = "medium", quick: bool = False, seed: int = 0,
             device: str = "auto", threads: int = 0) -> str:
    """Generate data, train, pick, evaluate against the truth; returns a printable summary."""
    output = Path(output)
    set_threads(threads)
    started = time.perf_counter()
    data = generate_demo_data(output / "data", n_micrographs=N_TRAIN + N_TEST, preset=preset, seed=seed)
    train_mics, test_mics = data.micrographs[:N_TRAIN], data.micrographs[N_TRAIN:]
    labels = labelled_subset(data.truth, [m.name for m in train_mics], LABELS_PER_MICROGRAPH, seed)
    write_coordinates(labels, output / "labels.txt")
    log.info("demo: %d training micrographs with %d labelled particles, %d test micrographs",
             len(train_mics), len(labels), len(test_mics))
    epochs, steps = (2, 10) if quick else (DEMO_EPOCHS, DEMO_STEPS)
    # the demo knows how many particles its micrographs hold, as a user who counted a few would
    train_names = [m.name for m in train_mics]
    expected = float(np.isin(data.truth.micrograph, train_names).sum()) / len(train_mics)
    settings = TrainSettings(particle_diameter=data.particle_diameter, epochs=epochs, steps_per_epoch=steps,
                             expected_particles=expected, seed=seed, device=device)
    result = train(train_mics, labels, PreprocessSettings(seed=seed), settings, output / "model",
                   progress=ProgressReporter("train"))
    extract_started = time.perf_counter()
    picks_all = extract(result.model, test_mics, ExtractSettings(threshold=-8.0, device=device),
                        progress=ProgressReporter("extract"))
    extract_seconds = time.perf_counter() - extract_started
    picks = picks_all.above(result.recommended_threshold)
    write_coordinates(picks, output / "picks.txt")
    test_names = [m.name for m in test_mics]
    truth = data.truth.select(np.isin(data.truth.micrograph, test_names))
    radius = data.particle_diameter / 2 / data.pixel_size
    full = evaluate(picks_all, truth, radius)
    at = evaluate(picks, truth, radius)
    dog_picks = dog_extract(test_mics, data.particle_diameter, PreprocessSettings(normalization="standard"))
    dog = evaluate(dog_picks, truth, radius)
    first = test_mics[0]
    plot_picks(first.path, picks.for_micrograph(first.name), output / "picks.png", radius,
               reference=truth.for_micrograph(first.name),
               title=f"{first.name}: pupick picks (colour = score), true particles in green")
    plot_pr_curve(full, output / "pr_curve.png", others=[("difference of Gaussians", dog)])
    plot_training(result.history, output / "training_curve.png")
    plot_threshold_table(result.threshold_table, output / "threshold_table.png", result.recommended_threshold)
    full.to_csv(output / "pr_curve.csv")
    summary = {
        "average_precision": full.average_precision, "dog_average_precision": dog.average_precision,
        "threshold": result.recommended_threshold,
        "precision": at.precision, "recall": at.recall, "f1": at.f1,
        "labelled_particles": len(labels), "test_micrographs": len(test_mics),
        "extract_micrographs_per_second": len(test_mics) / extract_seconds,
        "seconds": time.perf_counter() - started, "preset": preset, "quick": quick,
    }
    write_atomic(output / "summary.json", json.dumps(summary, indent=1))
    return "\n".join([
        "",
        f"pupick demo ({preset} synthetic micrographs, {len(labels)} labelled particles on {len(train_mics)} "
        f"micrographs, evaluated on {len(test_mics)} held-out micrographs)",
        f"  average precision (AP): {full.average_precision:.3f}   "
        f"(difference-of-Gaussians baseline: {dog.average_precision:.3f})",
        f"  at the recommended threshold {result.recommended_threshold:g}: precision {at.precision:.3f}, "
        f"recall {at.recall:.3f}, F1 {at.f1:.3f}",
        f"  pictures: {output / 'picks.png'}, {output / 'pr_curve.png'}, {output / 'training_curve.png'}, "
        f"{output / 'threshold_table.png'}",
        f"  picks: {output / 'picks.txt'}   model: {result.model_path}",
        f"  took {summary['seconds']:.0f} s",
    ])
