"""pupick-relion inside a real RELION 3.1 pipeline: External job -> Particle extraction -> 2D classes.

Needs relion_pipeliner, relion_preprocess and relion_refine on PATH (Debian's ``relion``
package, installed by .ci/run); skipped without them. The point is the protocol, not the
picking quality: training is kept to a few steps.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import starfile

from pupick_ext import generate_demo_data, read_coordinates, write_coordinate_star

pytestmark = [
    pytest.mark.relion,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("relion_pipeliner") is None, reason="RELION (relion_pipeliner) not on PATH"
    ),
]

DIAMETER = 150  # A, as the demo data's particles
BOX, SMALL_BOX = 128, 64  # extraction box in original pixels (1.5 A/px), rescaled for speed


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def executable(tmp_path: Path) -> str:
    """The installed console script, or a shim running this interpreter's module."""
    found = shutil.which("pupick-relion")
    if found:
        return found
    shim = tmp_path / "pupick-relion"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m relion_wrapper.cli "$@"\n')
    shim.chmod(0o755)
    return str(shim)


def make_project(root: Path) -> dict:
    """Demo micrographs as CtfFind writes them, and 3.1 Manual picking output from part of the truth."""
    demo = generate_demo_data(root, n_micrographs=6, shape=(1024, 1024))
    (root / "default_pipeline.star").write_text("\ndata_pipeline_general\n\n_rlnPipeLineJobCounter 1\n")
    manual = root / "ManualPick" / "job002"
    manual.mkdir(parents=True)
    (manual / "coords_suffix_manualpick.star").write_text("micrographs_ctf.star\n")
    for name in demo.truth.names[:4]:
        one = demo.truth.for_micrograph(name)
        write_coordinate_star(
            one.select(np.arange(len(one)) < 20), manual / "Micrographs" / f"{name}_manualpick.star"
        )
    return {"demo": demo, "coords": "ManualPick/job002/coords_suffix_manualpick.star"}


def pipeline_tables(root: Path) -> dict:
    return starfile.read(root / "default_pipeline.star", always_dict=True)


def wait_for_marker(job: Path, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p.name for p in job.glob("RELION_JOB_EXIT_*")]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(
        f"no exit marker in {job} after {timeout} s:\n{(job / 'run.out').read_text()[-3000:]}"
    )


def test_external_job_in_relion_pipeline(tmp_path: Path) -> None:
    started = time.monotonic()
    project = make_project(tmp_path)
    options = (
        ";".join(
            [
                f"fn_exe == {executable(tmp_path)}",
                "in_mic == micrographs_ctf.star",
                f"in_coords == {project['coords']}",
                f"param1_label == diameter;param1_value == {DIAMETER}",
                "param2_label == epochs;param2_value == 1",
                "param3_label == steps_per_epoch;param3_value == 5",
                "param4_label == max_picks;param4_value == 50",
                "param5_label == device;param5_value == cpu",
            ]
        )
        + ";"
    )
    run(["relion_pipeliner", "--addJob", "External", "--addJobOptions", options], tmp_path)
    processes = pipeline_tables(tmp_path)["pipeline_processes"]
    job_name = processes["rlnPipeLineProcessName"].iloc[-1]
    assert job_name.startswith("External/job")
    run(["relion_pipeliner", "--RunJobs", job_name], tmp_path, timeout=300)
    job = tmp_path / job_name
    assert wait_for_marker(job) == "RELION_JOB_EXIT_SUCCESS", (job / "run.err").read_text()
    assert sorted(p.name for p in job.glob("RELION_JOB_*")) == ["RELION_JOB_EXIT_SUCCESS"]
    assert (job / "run.err").read_text() == ""
    assert "RELION 3.1 output layout" in (job / "run.out").read_text()

    # RELION read RELION_OUTPUT_NODES.star: the coordinate node is in the pipeline, made by our job
    node = f"{job_name}coords_suffix_pupick.star"
    tables = pipeline_tables(tmp_path)
    node_types = dict(
        zip(
            tables["pipeline_nodes"]["rlnPipeLineNodeName"],
            tables["pipeline_nodes"]["rlnPipeLineNodeType"],
            strict=True,
        )
    )
    assert node_types[node] == 2
    edges = tables["pipeline_output_edges"]
    assert [job_name, node] in edges[["rlnPipeLineEdgeProcess", "rlnPipeLineEdgeToNode"]].values.tolist()
    status = dict(
        zip(
            tables["pipeline_processes"]["rlnPipeLineProcessName"],
            tables["pipeline_processes"]["rlnPipeLineProcessStatus"],
            strict=True,
        )
    )
    assert status[job_name] == 2  # PROC_FINISHED_SUCCESS

    # Particle extraction finds every micrograph's coordinates through the 3.1 path rule
    picks = {}
    for name in (f"mic_{i:03d}" for i in range(6)):
        coordinate_file = job / "Micrographs" / f"{name}_pupick.star"
        assert coordinate_file.is_file()
        picks[name] = read_coordinates(coordinate_file, fmt="star")
    total = sum(len(p) for p in picks.values())
    assert total > 0
    for p in picks.values():  # every box overlaps its micrograph (RELION pads the rest from the edge)
        assert ((p.x >= 0) & (p.x < 1024) & (p.y >= 0) & (p.y < 1024)).all()
    extract = tmp_path / "Extract" / "job003"
    extract.mkdir(parents=True)
    run(
        [
            "relion_preprocess",
            "--i",
            "micrographs_ctf.star",
            "--coord_dir",
            job_name,
            "--coord_suffix",
            "_pupick.star",
            "--extract",
            "--extract_size",
            str(BOX),
            "--scale",
            str(SMALL_BOX),
            "--norm",
            "--bg_radius",
            str(SMALL_BOX * 3 // 8),
            "--invert_contrast",
            "--part_star",
            "Extract/job003/particles.star",
            "--part_dir",
            "Extract/job003/",
        ],
        tmp_path,
    )
    particles = starfile.read(extract / "particles.star", always_dict=True)["particles"]
    assert len(particles) == total  # a coordinate file in the wrong place would silently give 0
    for name, p in picks.items():
        mine = particles[particles["rlnMicrographName"] == f"Micrographs/{name}.mrc"]
        np.testing.assert_allclose(np.sort(mine["rlnCoordinateX"].to_numpy(float)), np.sort(p.x), atol=1e-3)

    # ... and the particles go into a 2D classification
    (tmp_path / "Class2D" / "job004").mkdir(parents=True)
    run(
        [
            "relion_refine",
            "--i",
            "Extract/job003/particles.star",
            "--o",
            "Class2D/job004/run",
            "--K",
            "2",
            "--iter",
            "2",
            "--tau2_fudge",
            "2",
            "--particle_diameter",
            str(DIAMETER),
            "--ctf",
            "--j",
            "2",
            "--dont_combine_weights_via_disc",
            "--pool",
            "10",
            "--pad",
            "2",
            "--norm",
            "--scale",
            "--flatten_solvent",
            "--zero_mask",
            "--oversampling",
            "1",
            "--psi_step",
            "12",
            "--offset_range",
            "5",
            "--offset_step",
            "2",
            "--random_seed",
            "0",
        ],
        tmp_path,
        timeout=600,
    )
    classified = starfile.read(tmp_path / "Class2D" / "job004" / "run_it002_data.star", always_dict=True)
    assert len(classified["particles"]) == total
    print(f"RELION pipeline test: {total} particles, {time.monotonic() - started:.0f} s")


def test_origin_shift_sign_matches_relion_recentring(tmp_path: Path) -> None:
    """Labels from --in_parts add shifts back exactly as RELION's re-centring does (relion_preprocess)."""
    from relion_wrapper.star_io import read_micrographs, read_particle_labels

    demo = generate_demo_data(tmp_path, n_micrographs=1, shape=(512, 512))
    coords = tmp_path / "Coords"
    for name in demo.truth.names:
        write_coordinate_star(demo.truth.for_micrograph(name), coords / "Micrographs" / f"{name}_truth.star")
    run(
        [
            "relion_preprocess",
            "--i",
            "micrographs_ctf.star",
            "--coord_dir",
            "Coords/",
            "--coord_suffix",
            "_truth.star",
            "--extract",
            "--extract_size",
            str(BOX),
            "--scale",
            str(SMALL_BOX),
            "--part_star",
            "Extract/job002/particles.star",
            "--part_dir",
            "Extract/job002/",
        ],
        tmp_path,
    )
    blocks = starfile.read(tmp_path / "Extract" / "job002" / "particles.star", always_dict=True)
    shifts = np.resize([3.0, -6.0, 4.5, 0.0], (2, len(blocks["particles"])))  # A, integer pixels at 1.5 A/px
    blocks["particles"]["rlnOriginXAngst"] = shifts[0]
    blocks["particles"]["rlnOriginYAngst"] = shifts[1]
    starfile.write(blocks, tmp_path / "shifted.star")
    run(
        [
            "relion_preprocess",
            "--i",
            "micrographs_ctf.star",
            "--reextract_data_star",
            "shifted.star",
            "--recenter",
            "--extract",
            "--extract_size",
            str(BOX),
            "--scale",
            str(SMALL_BOX),
            "--part_star",
            "Extract/job003/particles.star",
            "--part_dir",
            "Extract/job003/",
        ],
        tmp_path,
    )
    recentred = starfile.read(tmp_path / "Extract" / "job003" / "particles.star", always_dict=True)[
        "particles"
    ]
    assert (recentred["rlnOriginXAngst"] == 0).all()  # whole-pixel shifts moved into the coordinates

    labels = read_particle_labels(
        tmp_path / "shifted.star", read_micrographs(tmp_path / "micrographs_ctf.star")
    )
    np.testing.assert_allclose(labels.x, recentred["rlnCoordinateX"].to_numpy(float), atol=1e-4)
    np.testing.assert_allclose(labels.y, recentred["rlnCoordinateY"].to_numpy(float), atol=1e-4)
    assert not np.allclose(labels.x, blocks["particles"]["rlnCoordinateX"].to_numpy(float))
