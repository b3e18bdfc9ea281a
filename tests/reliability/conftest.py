"""Fixtures of the reliability tests: the bad-input corpus, a quickly trained model, the fake cryoSPARC.

The corpus is generated once per session by ``tests/data/make_bad_inputs.py`` into a temporary
directory; the loopback fake CryoSPARC is the one ``tests/adapters`` drives (``cryosparc_fake``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "data"))
sys.path.insert(0, str(HERE.parent / "adapters"))

from cryosparc_fake import FakeCryosparc, serve  # noqa: E402
from cryosparc_fake.harness import EMAIL, PASSWORD  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    """The bad-input corpus (see tests/data/make_bad_inputs.py), without the huge micrograph."""
    from make_bad_inputs import make_corpus

    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def good_model(corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for two steps on the corpus' good micrographs (fine for the protocol)."""
    from pupick_ext import MicrographEntry, Picks, PreprocessSettings, TrainSettings, train

    entries = [MicrographEntry(corpus.project / "Micrographs" / f"{n}.mrc") for n in corpus.good]
    labels = Picks.concat(Picks.for_one(n, xy[:, 0], xy[:, 1]) for n, xy in corpus.truth.items())
    result = train(
        entries,
        labels,
        PreprocessSettings(),
        TrainSettings(particle_diameter=150.0, epochs=1, steps_per_epoch=2, device="cpu", num_threads=1),
        tmp_path_factory.mktemp("good_model"),
    )
    return Path(result.model_path)


class FakeSite:
    """A running fake cryoSPARC whose project P1 is the corpus project; jobs are added per test."""

    def __init__(self, fake, state: FakeCryosparc) -> None:
        self.fake, self.state = fake, state
        self._next = 10

    @property
    def env(self) -> dict[str, str]:
        return {
            "CRYOSPARC_BASE_URL": self.fake.base_url,
            "CRYOSPARC_EMAIL": EMAIL,
            "CRYOSPARC_PASSWORD": PASSWORD,
        }

    def add_job(self, output: str, datatype: str, dataset, type_: str = "patch_ctf_estimation_multi") -> str:
        uid = f"J{self._next}"
        self._next += 1
        self.state.add_completed_job("P1", "W1", uid, type_, uid, {output: (datatype, dataset)})
        return uid


@pytest.fixture(scope="module")
def fake_site(corpus) -> Iterator[FakeSite]:
    """One fake cryoSPARC per test module (project P1 = the corpus project, workspace W1)."""
    state = FakeCryosparc(email=EMAIL, password=PASSWORD)
    state.add_project("P1", corpus.project)
    state.add_workspace("P1", "W1")
    with serve(state) as fake:
        yield FakeSite(fake, state)
        assert not fake.errors, "the fake could not handle a request:\n" + "\n".join(fake.errors)


@pytest.fixture(scope="session")
def narrow_model(corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow network (width 8) for the huge micrograph: scoring 6000^2 px stays quick on a CPU."""
    from pupick_ext import MicrographEntry, Picks, PreprocessSettings, TrainSettings, train

    entries = [MicrographEntry(corpus.project / "Micrographs" / f"{n}.mrc") for n in corpus.good]
    labels = Picks.concat(Picks.for_one(n, xy[:, 0], xy[:, 1]) for n, xy in corpus.truth.items())
    result = train(
        entries,
        labels,
        PreprocessSettings(),
        TrainSettings(
            particle_diameter=150.0, width=8, epochs=1, steps_per_epoch=2, device="cpu", num_threads=1
        ),
        tmp_path_factory.mktemp("narrow_model"),
    )
    return Path(result.model_path)
