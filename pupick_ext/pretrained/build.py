"""Rebuild the shipped ``general`` starting model from synthetic data:
``python -m pupick_ext.pretrained.build``.

Generates fully labelled synthetic micrographs (several particles, the medium and hard
presets, varied dose, offsets, carbon and ice), trains the default network on them from
random weights with the ordinary training loop, and writes the model file that
``TrainSettings(init="general")`` starts from. Deterministic for a seed; on 2 CPU cores
it takes about 45 minutes (4,000 steps, one thread beside other jobs).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from ..api import train
from ..demo.synthetic import PARTICLE_DIAMETER, generate_demo_data
from ..io.picks import Picks
from ..settings import PreprocessSettings, TrainSettings
from . import pretrained_path

log = logging.getLogger(__name__)

#: particles of the training set (the demo's own is left out, so the demo shows a new particle)
PARTICLE_SEEDS = tuple(range(101, 113))  # twelve shapes
PRESETS = ("medium", "hard")


def build(workdir: Path, micrographs_per_particle: int = 3, epochs: int = 40, steps: int = 100,
          seed: int = 0, threads: int = 0) -> Path:
    """Train the general model under ``workdir`` and copy it into the package; returns its path."""
    entries, tables = [], []
    for i, particle in enumerate(PARTICLE_SEEDS):
        preset = PRESETS[i % len(PRESETS)]
        data = generate_demo_data(workdir / f"data_{particle}", n_micrographs=micrographs_per_particle,
                                  preset=preset, seed=seed + i, particle_seed=particle)
        rename = {m.name: f"p{particle}_{m.name}" for m in data.micrographs}
        entries += [type(m)(m.path, rename[m.name], m.pixel_size) for m in data.micrographs]
        tables.append(data.truth.renamed(rename))
    labels = Picks.concat(tables)
    expected = len(labels) / len(entries)
    settings = TrainSettings(particle_diameter=PARTICLE_DIAMETER, epochs=epochs, steps_per_epoch=steps,
                             expected_particles=expected, lr_schedule="cosine", init=None,
                             holdout_by="micrograph", holdout_fraction=0.15, seed=seed, num_threads=threads,
                             keep="best", patience=epochs)  # the best held-out epoch of the whole run
    result = train(entries, labels, PreprocessSettings(seed=seed), settings, workdir / "model")
    target = pretrained_path("general")
    assert target is not None
    shutil.copyfile(result.model_path, target)
    log.info("general model written to %s (held-out AP %.3f)", target,
             max(h.get("ap", 0.0) for h in result.history))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench_out/general_model"))
    parser.add_argument("--micrographs-per-particle", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    build(args.workdir, args.micrographs_per_particle, args.epochs, args.steps, args.seed, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
