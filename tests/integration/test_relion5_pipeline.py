"""pupick-relion inside a real RELION 5.1 project, everything run by RELION's own pipeliner.

A 4.0+ layout project (default_pipeline.star with node type labels, a Manual picking job's
manualpick.star) -> pupick as a ``relion.external`` job (train+extract) -> a
``relion.extract`` job on pupick's ``autopick.star`` node -> a ``relion.class2d`` job on those
particles; then training from Class2D particles (``--in_parts``), ``mode extract`` with the
first job's model, and on-the-fly processing: new micrographs appended, the same External
and Extract jobs run again by the pipeliner, only the new micrographs picked and extracted.

Needs RELION 5.1 as ``.ci/install_relion5.sh`` installs it (Debian sid's ``relion`` 5.1.0 in a
debootstrap root, wrapper scripts in /opt/relion5/bin, or ``PUPICK_RELION5_BIN``); skipped,
with that reason, without it. Every assertion is on what RELION itself wrote. Training is
kept to a few steps: the point is the protocol, not the picking quality.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import starfile

from pupick_ext import generate_demo_data, read_coordinates, write_coordinate_star

RELION5_BIN = Path(os.environ.get("PUPICK_RELION5_BIN", "/opt/relion5/bin"))

pytestmark = [
    pytest.mark.relion,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(RELION5_BIN / "relion_pipeliner", os.X_OK),
        reason=f"RELION 5.1 not installed in {RELION5_BIN} (as root: bash .ci/install_relion5.sh; "
        "or set PUPICK_RELION5_BIN)",
    ),
]

DIAMETER = 150  # A, as the demo data's particles
BOX, SMALL_BOX = 128, 64  # extraction box in original pixels (1.5 A/px), rescaled for speed
N_FIRST, N_ALL = 6, 8  # micrographs at the start, and after the on-the-fly arrivals
MANUALPICK, EXTERNAL = "ManualPick/job002/", "External/job003/"
EXTRACT, CLASS2D = "Extract/job004/", "Class2D/job005/"
QUICK = {"epochs": 1, "steps_per_epoch": 5, "max_picks": 50, "device": "cpu"}


# ------------------------------------------------------------------ helpers
def relion_env(shim_dir: Path) -> dict[str, str]:
    """RELION 5.1's programs first on PATH (the pipeliner starts extraction and refine through it)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(RELION5_BIN), str(shim_dir), env.get("PATH", "")])
    env.pop("RELION_QSUB_TEMPLATE", None)
    return env


def run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=relion_env(cwd / ".bin")
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def executable(shim_dir: Path) -> str:
    """The installed console script, or a shim running this interpreter's module."""
    found = shutil.which("pupick-relion") or (
        str(Path(sys.executable).parent / "pupick-relion")
        if (Path(sys.executable).parent / "pupick-relion").is_file()
        else None
    )
    if found:
        return found
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / "pupick-relion"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m relion_wrapper.cli "$@"\n')
    shim.chmod(0o755)
    return str(shim)


def options(values: dict[str, object]) -> str:
    """``--addJobOptions`` text: ``name == value;`` with no blank after ';'
    (RELION reads it into the name)."""
    return "".join(f"{k} == {v};" for k, v in values.items())


def params(values: dict[str, object]) -> dict[str, object]:
    """External-job parameters as param1_label/param1_value ... (RELION allows ten)."""
    assert len(values) <= 10
    out: dict[str, object] = {}
    for i, (label, value) in enumerate(values.items(), start=1):
        out[f"param{i}_label"] = label
        out[f"param{i}_value"] = value
    return out


def add_job(root: Path, job_type: str, values: dict[str, object]) -> str:
    """``relion_pipeliner --addJob``; returns the job name RELION gave it (from default_pipeline.star)."""
    before = set(pipeline(root)["pipeline_processes"]["rlnPipeLineProcessName"])
    run(["relion_pipeliner", "--addJob", job_type, "--addJobOptions", options(values)], root)
    after = pipeline(root)["pipeline_processes"]
    new = [name for name in after["rlnPipeLineProcessName"] if name not in before]
    assert len(new) == 1, new
    return new[0]


def run_jobs(root: Path, *jobs: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``relion_pipeliner --RunJobs``: RELION runs the jobs in turn and waits for each one's exit marker."""
    return run(["relion_pipeliner", "--RunJobs", " ".join(jobs), "--sec_wait_after", "1"], root, timeout)


def pipeline(root: Path) -> dict:
    return starfile.read(root / "default_pipeline.star", always_dict=True)


def process_status(root: Path) -> dict[str, str]:
    table = pipeline(root)["pipeline_processes"]
    return dict(zip(table["rlnPipeLineProcessName"], table["rlnPipeLineProcessStatusLabel"], strict=True))


def node_types(root: Path) -> dict[str, str]:
    table = pipeline(root)["pipeline_nodes"]
    return dict(zip(table["rlnPipeLineNodeName"], table["rlnPipeLineNodeTypeLabel"], strict=True))


def markers(job: Path) -> list[str]:
    return sorted(p.name for p in job.glob("RELION_JOB_*"))


def particles_of(root: Path, star: str):
    return starfile.read(root / star, always_dict=True)["particles"]


def write_micrographs(root: Path, blocks: dict, n: int) -> None:
    """micrographs_ctf.star with the first ``n`` micrographs (more arrive later, on the fly)."""
    subset = dict(blocks)
    subset["micrographs"] = blocks["micrographs"].iloc[:n].reset_index(drop=True)
    starfile.write(subset, root / "micrographs_ctf.star", overwrite=True)


PIPELINE_5 = """
# version 50001

data_pipeline_general

_rlnPipeLineJobCounter                       3


# version 50001

data_pipeline_processes

loop_
_rlnPipeLineProcessName #1
_rlnPipeLineProcessAlias #2
_rlnPipeLineProcessTypeLabel #3
_rlnPipeLineProcessStatusLabel #4
ManualPick/job002/       None relion.manualpick  Succeeded


# version 50001

data_pipeline_nodes

loop_
_rlnPipeLineNodeName #1
_rlnPipeLineNodeTypeLabel #2
_rlnPipeLineNodeTypeLabelDepth #3
ManualPick/job002/manualpick.star MicrographCoordsGroup.star.relion.manualpick            1


# version 50001

data_pipeline_output_edges

loop_
_rlnPipeLineEdgeProcess #1
_rlnPipeLineEdgeToNode #2
ManualPick/job002/ ManualPick/job002/manualpick.star

"""


def make_project(root: Path) -> dict:
    """Demo micrographs as CtfFind writes them; a 4.0+ Manual picking job from part of the truth."""
    demo = generate_demo_data(root, n_micrographs=N_ALL, shape=(1024, 1024))
    blocks = starfile.read(root / "micrographs_ctf.star", always_dict=True)
    write_micrographs(root, blocks, N_FIRST)
    (root / "default_pipeline.star").write_text(PIPELINE_5)
    manual = root / MANUALPICK
    rows = []
    for name in demo.truth.names[:4]:
        one = demo.truth.for_micrograph(name)
        path = f"{MANUALPICK}Micrographs/{name}_manualpick.star"
        write_coordinate_star(one.select(np.arange(len(one)) < 20), root / path)
        rows.append(f"Micrographs/{name}.mrc {path}")
    (manual / "manualpick.star").write_text(
        "\n# version 50001\n\ndata_coordinate_files\n\nloop_\n_rlnMicrographName #1\n"
        "_rlnMicrographCoordinates #2\n" + "\n".join(rows) + "\n\n"
    )
    return {"demo": demo, "blocks": blocks, "exe": executable(root / ".bin")}


def external_job(root: Path, exe: str, extra_inputs: dict[str, object], values: dict[str, object]) -> str:
    return add_job(
        root,
        "relion.external",
        {"fn_exe": exe, "in_mic": "micrographs_ctf.star", **extra_inputs, **params(values), "nr_threads": 2},
    )


def picks_of(root: Path, job: str) -> dict[str, object]:
    """The picks a job's autopick.star points to, by micrograph name as RELION wrote it."""
    index = starfile.read(root / job / "autopick.star", always_dict=True)["coordinate_files"]
    return {
        mic: read_coordinates(root / coords, fmt="star")
        for mic, coords in zip(index["rlnMicrographName"], index["rlnMicrographCoordinates"], strict=True)
    }


def assert_one_particle_per_pick(root: Path, particles, picks: dict) -> None:
    """Extraction found every coordinate file (a file in the wrong place silently gives 0)."""
    assert len(particles) == sum(len(p) for p in picks.values())
    for mic, p in picks.items():
        mine = particles[particles["rlnMicrographName"] == mic]
        np.testing.assert_allclose(np.sort(mine["rlnCoordinateX"].to_numpy(float)), np.sort(p.x), atol=1e-3)
        np.testing.assert_allclose(np.sort(mine["rlnCoordinateY"].to_numpy(float)), np.sort(p.y), atol=1e-3)


# ------------------------------------------------------------------ the project, shared by the tests
@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("relion5")
    version = run(["relion_refine", "--version"], root).stdout
    assert "5.1" in version, version
    found = make_project(root)
    found["root"] = root
    found["times"] = {}
    return found


@pytest.fixture(scope="module")
def trained(project: dict) -> dict:
    """pupick's External job, added and run by the pipeliner: train on the manual picks, pick all."""
    root = project["root"]
    started = time.monotonic()
    job = external_job(
        root, project["exe"], {"in_coords": f"{MANUALPICK}manualpick.star"}, {"diameter": DIAMETER, **QUICK}
    )
    assert job == EXTERNAL
    run_jobs(root, job)
    project["times"]["external"] = time.monotonic() - started
    return project


@pytest.fixture(scope="module")
def extracted(trained: dict) -> dict:
    """A relion.extract job added by the pipeliner with coords_suffix = pupick's node, and run."""
    root = trained["root"]
    started = time.monotonic()
    job = add_job(
        root,
        "relion.extract",
        {
            "star_mics": "micrographs_ctf.star",
            "coords_suffix": f"{EXTERNAL}autopick.star",
            "extract_size": BOX,
            "do_rescale": "Yes",
            "rescale": SMALL_BOX,
            "do_norm": "Yes",
            "bg_diameter": -1,
            "do_invert": "Yes",
            "nr_mpi": 1,
        },
    )
    assert job == EXTRACT
    run_jobs(root, job)
    trained["times"]["extract"] = time.monotonic() - started
    return trained


# ------------------------------------------------------------------ the tests
def test_external_job_registers_pupick_node(trained: dict) -> None:
    root = trained["root"]
    job = root / EXTERNAL
    assert markers(job) == ["RELION_JOB_EXIT_SUCCESS"], (job / "run.err").read_text()
    assert (job / "run.err").read_text() == ""
    run_out = (job / "run.out").read_text()
    assert "RELION 5.0/5.1 output layout" in run_out
    assert "Traceback" not in run_out and "ERROR" not in run_out
    assert "--expected-particles" not in run_out  # engine wording becomes RELION's parameter label
    assert "Training [" in run_out and "Picking [" in run_out  # progress lines RELION's job window shows
    # what RELION ran: the External job's command line in note.txt
    note = (job / "note.txt").read_text()
    assert f"--o {EXTERNAL}" in note and "--in_mics micrographs_ctf.star" in note
    assert f"--in_coords {MANUALPICK}manualpick.star" in note and f"--diameter {DIAMETER}" in note
    # RELION read RELION_OUTPUT_NODES.star: the node is in the pipeline with pupick's type, made by the job
    node = f"{EXTERNAL}autopick.star"
    assert node_types(root)[node] == "MicrographCoordsGroup.star.relion.autopick"
    edges = pipeline(root)["pipeline_output_edges"]
    assert [EXTERNAL, node] in edges[["rlnPipeLineEdgeProcess", "rlnPipeLineEdgeToNode"]].values.tolist()
    inputs = pipeline(root)["pipeline_input_edges"]
    assert [f"{MANUALPICK}manualpick.star", EXTERNAL] in inputs[
        ["rlnPipeLineEdgeFromNode", "rlnPipeLineEdgeProcess"]
    ].values.tolist()
    assert process_status(root)[EXTERNAL] == "Succeeded"
    picks = picks_of(root, EXTERNAL)
    assert sorted(picks) == [f"Micrographs/mic_{i:03d}.mrc" for i in range(N_FIRST)]
    assert sum(len(p) for p in picks.values()) > 0
    assert (job / "model.pupick").is_file()
    assert list(job.glob("picks_*.png"))


def test_pipeliner_extracts_one_particle_per_pick_and_classifies(extracted: dict) -> None:
    root = extracted["root"]
    job = root / EXTRACT
    assert markers(job) == ["RELION_JOB_EXIT_SUCCESS"], (job / "run.err").read_text()[-2000:]
    note = (job / "note.txt").read_text()
    assert f"--coord_list {EXTERNAL}autopick.star" in note  # RELION 5 hands our node to extraction as is
    assert node_types(root)[f"{EXTRACT}particles.star"].startswith("ParticleGroupMetadata.star")
    particles = particles_of(root, f"{EXTRACT}particles.star")
    assert_one_particle_per_pick(root, particles, picks_of(root, EXTERNAL))
    assert f"Written out STAR file with {len(particles)} particles" in (job / "run.out").read_text()

    started = time.monotonic()
    classes = add_job(
        root,
        "relion.class2d",
        {
            "fn_img": f"{EXTRACT}particles.star",
            "nr_classes": 2,
            "nr_iter_em": 2,
            "particle_diameter": DIAMETER,
            "do_ctf_correction": "Yes",
            "do_em": "Yes",
            "do_grad": "No",
            "use_gpu": "No",
            "do_preread_images": "No",
            "nr_threads": 2,
            "nr_pool": 10,
            "offset_range": 5,
            "offset_step": 2,
        },
    )
    assert classes == CLASS2D
    run_jobs(root, classes)
    extracted["times"]["class2d"] = time.monotonic() - started
    job = root / CLASS2D
    assert markers(job) == ["RELION_JOB_EXIT_SUCCESS"], (job / "run.err").read_text()[-2000:]
    assert process_status(root)[CLASS2D] == "Succeeded"
    data = sorted((root / CLASS2D).glob("run_it*_data.star"))[-1]
    assert len(particles_of(root, str(data.relative_to(root)))) == len(particles)


def test_training_from_class2d_particles(extracted: dict) -> None:
    """A particles node (Select / Class2D) as the training labels: --in_parts."""
    root = extracted["root"]
    data = sorted((root / CLASS2D).glob("run_it*_data.star"))
    if not data:
        pytest.skip("needs the Class2D job of the test before")
    parts = str(data[-1].relative_to(root))
    job = external_job(root, extracted["exe"], {"in_part": parts}, {"diameter": DIAMETER, **QUICK})
    run_jobs(root, job)
    out = root / job
    assert markers(out) == ["RELION_JOB_EXIT_SUCCESS"], (out / "run.err").read_text()
    assert f"--in_parts {parts}" in (out / "note.txt").read_text()
    run_out = (out / "run.out").read_text()
    assert f"Labels from {parts}: {len(particles_of(root, parts))} particles" in run_out
    assert node_types(root)[f"{job}autopick.star"] == "MicrographCoordsGroup.star.relion.autopick"
    assert len(picks_of(root, job)) == N_FIRST


def test_mode_extract_with_a_model_from_an_earlier_job(trained: dict) -> None:
    root = trained["root"]
    job = external_job(
        root,
        trained["exe"],
        {},
        {"mode": "extract", "model": f"{EXTERNAL}model.pupick", "max_picks": 50, "device": "cpu"},
    )
    run_jobs(root, job)
    out = root / job
    assert markers(out) == ["RELION_JOB_EXIT_SUCCESS"], (out / "run.err").read_text()
    assert "Training [" not in (out / "run.out").read_text()
    assert not (out / "model.pupick").exists()
    assert node_types(root)[f"{job}autopick.star"] == "MicrographCoordsGroup.star.relion.autopick"
    mine, first = picks_of(root, job), picks_of(root, EXTERNAL)
    assert sorted(mine) == sorted(first)
    for mic in first:  # same model, same micrographs, same threshold: the same picks
        np.testing.assert_allclose(np.sort(mine[mic].x), np.sort(first[mic].x), atol=1e-3)


def test_on_the_fly_new_micrographs_picked_and_extracted(extracted: dict) -> None:
    """New micrographs appended; the pipeliner runs the External and the Extract job again (as a
    Scheme does with 'continue'): only the new ones are picked and extracted, the model is kept."""
    root = extracted["root"]
    job = root / EXTERNAL
    model_before = (job / "model.pupick").stat().st_mtime_ns
    files_before = {p: p.stat().st_mtime_ns for p in job.glob("Micrographs/*_pupick.star")}
    assert len(files_before) == N_FIRST
    stacks_before = {p: p.stat().st_mtime_ns for p in (root / EXTRACT).glob("Micrographs/*.mrcs")}
    assert len(stacks_before) == N_FIRST
    write_micrographs(root, extracted["blocks"], N_ALL)

    started = time.monotonic()
    run_jobs(root, EXTERNAL, EXTRACT)
    extracted["times"]["on_the_fly"] = time.monotonic() - started
    assert markers(job) == ["RELION_JOB_EXIT_SUCCESS"], (job / "run.err").read_text()
    assert (job / "model.pupick").stat().st_mtime_ns == model_before
    assert {p: p.stat().st_mtime_ns for p in files_before} == files_before  # old picks untouched
    run_out = (job / "run.out").read_text()
    assert "training skipped" in run_out
    assert f"Picking {N_ALL - N_FIRST} micrograph(s); {N_FIRST} already have coordinates" in run_out
    picks = picks_of(root, EXTERNAL)
    assert sorted(picks) == [f"Micrographs/mic_{i:03d}.mrc" for i in range(N_ALL)]
    assert process_status(root)[EXTERNAL] == "Succeeded"

    extract = root / EXTRACT
    assert markers(extract) == ["RELION_JOB_EXIT_SUCCESS"], (extract / "run.err").read_text()[-2000:]
    assert "--only_do_unfinished" in (extract / "note.txt").read_text().split("Executing new job")[-1]
    assert_one_particle_per_pick(root, particles_of(root, f"{EXTRACT}particles.star"), picks)
    stacks = sorted(p.name for p in extract.glob("Micrographs/*.mrcs"))
    assert stacks == [f"mic_{i:03d}.mrcs" for i in range(N_ALL)]
    assert {p: p.stat().st_mtime_ns for p in stacks_before} == stacks_before  # only the new ones extracted
    print("RELION 5.1 times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in extracted["times"].items()))
