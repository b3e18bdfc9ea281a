"""Fixtures for the cryoSPARC adapter tests: demo micrographs, a project scene, the loopback fake.

The fake CryoSPARC listens on 127.0.0.1 only and stops when each test ends.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cryosparc_fake import FakeCryosparc, serve  # noqa: E402
from cryosparc_fake.harness import EMAIL, PASSWORD, Live, load_scene  # noqa: E402
from cryosparc_fake.scene import Scene, build_scene  # noqa: E402


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """Three small non-square synthetic micrographs (ny=384, nx=512) with ground truth."""
    from pupick_ext import generate_demo_data

    return generate_demo_data(
        tmp_path_factory.mktemp("demo"), n_micrographs=3, preset="easy", seed=1, shape=(384, 512)
    )


@pytest.fixture(scope="session")
def trained_model(demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained once (by the engine, not the wrapper) for extract-mode tests."""
    from pupick_ext import PreprocessSettings, TrainSettings, train

    labels = demo.truth.select(np.arange(len(demo.truth)) % 2 == 0)
    result = train(
        demo.micrographs,
        labels,
        PreprocessSettings(),
        TrainSettings(particle_diameter=demo.particle_diameter, epochs=1, steps_per_epoch=2, num_threads=2),
        tmp_path_factory.mktemp("model"),
    )
    return result.model_path


@pytest.fixture
def scene(demo, tmp_path: Path) -> Scene:
    return build_scene(demo, tmp_path / "P1")


@pytest.fixture
def live(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    for name in (
        "CRYOSPARC_BASE_URL",
        "CRYOSPARC_MASTER_HOSTNAME",
        "CRYOSPARC_BASE_PORT",
        "CRYOSPARC_EMAIL",
        "CRYOSPARC_PASSWORD",
        "CRYOSPARC_LICENSE_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    state = FakeCryosparc(email=EMAIL, password=PASSWORD)
    load_scene(state, scene)
    with serve(state) as fake:
        yield Live(fake, state, scene)
        assert not fake.errors, "the fake could not handle a request:\n" + "\n".join(fake.errors)
