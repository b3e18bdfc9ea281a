"""Offline mode: exported .cs files in; particles .cs + .csg + RELION STAR out, reloaded and compared."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml  # a test dependency (pyproject [test]): the .csg is checked, never skipped
from cryosparc.dataset import Dataset
from cryosparc_fake.harness import FAST, PICKER_DESCR

from cryosparc_wrapper import PickOptions, run_offline
from cryosparc_wrapper.cli import main
from pupick_ext import InputError, read_coordinates


def check_outputs(out, scene, n_expected: int | None = None, flip_y: bool = False) -> Dataset:
    """The .cs reloads with cryoSPARC's fields; the .csg points at it; the STAR files agree."""
    particles = Dataset.load(out / "particles.cs")
    assert particles.descr() == PICKER_DESCR
    assert len(particles) > 0 if n_expected is None else len(particles) == n_expected

    csg = yaml.safe_load((out / "particles.csg").read_text())
    assert csg["group"]["type"] == "particle" and csg["group"]["name"] == "particles"
    assert csg["results"] == {
        slot: {"metafile": ">particles.cs", "num_items": len(particles), "type": f"particle.{slot}"}
        for slot in ("location", "pick_stats")
    }
    assert str(csg["version"]).startswith("v")

    paths = dict(zip(scene.exposures["micrograph_blob/path"], scene.names, strict=True))
    mic = np.array([paths[p] for p in particles["location/micrograph_path"]])
    for name in scene.names:
        rows = mic == name
        star = out / "coordinates" / f"{name}_pupick.star"
        assert star.is_file()
        relion = read_coordinates(star)  # the engine's reader: what the RELION wrapper writes and reads
        assert len(relion) == int(rows.sum())
        ny, nx = scene.shapes[name]
        x = particles["location/center_x_frac"][rows].astype(np.float64) * nx
        y_frac = particles["location/center_y_frac"][rows].astype(np.float64)
        y = (1 - y_frac) * ny if flip_y else y_frac * ny
        np.testing.assert_allclose(np.sort(x), np.sort(relion.x), atol=1e-2)
        np.testing.assert_allclose(np.sort(y), np.sort(relion.y), atol=1e-2)
        scores = np.sort(particles["pick_stats/power"][rows])
        np.testing.assert_allclose(scores, np.sort(relion.score), atol=1e-4)
    return particles


def test_train_and_extract_offline(scene, tmp_path) -> None:
    out = scene.project_dir / "imports" / "pupick"
    result = run_offline(
        [scene.exposures_cs],
        [scene.labels_cs],
        scene.project_dir,
        out,
        PickOptions(diameter=scene.diameter, **FAST),
    )
    particles = check_outputs(out, scene, result.n_particles)
    assert set(particles["location/micrograph_uid"].tolist()) <= set(scene.exposures["uid"].tolist())
    assert result.model_path == out / "training" / "model.pupick" and result.model_path.is_file()
    settings = json.loads((out / "pupick_cryosparc.json").read_text())
    assert settings["mode"] == "offline" and settings["options"]["epochs"] == 1


def test_cli_extract_offline_with_flip_y_and_a_passthrough_file(
    scene, trained_model, tmp_path, capsys
) -> None:
    """Two exposure files (a result and its passthrough) are joined on uid, as cryoSPARC splits them."""
    blob = scene.exposures.filter_prefix("micrograph_blob", copy=True)
    rest = scene.exposures.filter_prefixes(["mscope_params", "ctf"], copy=True)
    blob.save(tmp_path / "J2_exposures.cs")
    rest.save(tmp_path / "J2_passthrough_exposures.cs")
    out = tmp_path / "out"
    code = main(
        [
            "-q",
            "offline",
            "--project-dir",
            str(scene.project_dir),
            "--exposures",
            str(tmp_path / "J2_exposures.cs"),
            "--exposures",
            str(tmp_path / "J2_passthrough_exposures.cs"),
            "--out",
            str(out),
            "--mode",
            "extract",
            "--model",
            str(trained_model),
            "--threshold",
            "-20",
            "--flip-y",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    particles = check_outputs(out, scene, flip_y=True)
    assert set(particles["location/exp_group_id"].tolist()) == {1}  # from the passthrough file
    assert (
        captured.out.strip()
        == f"{len(particles)} particles: {out / 'particles.cs'} (import {out / 'particles.csg'})"
    )


def test_missing_micrograph_is_one_line_and_writes_nothing(scene, trained_model, tmp_path, capsys) -> None:
    missing = scene.paths[scene.names[2]]
    missing.unlink()
    out = tmp_path / "out"
    code = main(
        [
            "offline",
            "--project-dir",
            str(scene.project_dir),
            "--exposures",
            str(scene.exposures_cs),
            "--out",
            str(out),
            "--mode",
            "extract",
            "--model",
            str(trained_model),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        f"pupick-cryosparc: error: {missing}: micrograph not found; give the "
        "cryoSPARC project directory with --project-dir"
    ]
    assert not (out / "particles.cs").exists() and not (out / "particles.csg").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_micrograph_leaves_no_particles_file(scene, trained_model, tmp_path, damage: str) -> None:
    """Caught at the header check (garbage) or while picking (truncated data): no .cs/.csg either way."""
    broken = scene.paths[scene.names[1]]
    data = broken.read_bytes()
    broken.write_bytes(b"MRC?" * 300 if damage == "garbage" else data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(InputError, match=str(broken)):
        run_offline(
            [scene.exposures_cs],
            None,
            scene.project_dir,
            out,
            PickOptions(mode="extract", model=trained_model, threshold=-20.0),
        )
    assert not (out / "particles.cs").exists() and not (out / "particles.csg").exists()
    leftovers = (
        [p for p in out.rglob("*") if p.name.startswith(".") or "tmp" in p.name] if out.exists() else []
    )
    assert not leftovers


def test_not_a_cs_file(scene, tmp_path, capsys) -> None:
    bogus = tmp_path / "exposures.cs"
    bogus.write_text("hello")
    code = main(
        [
            "offline",
            "--project-dir",
            str(scene.project_dir),
            "--exposures",
            str(bogus),
            "--particles",
            str(scene.labels_cs),
            "--out",
            str(tmp_path / "o"),
            "--diameter",
            "150",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(f"pupick-cryosparc: error: {bogus}: not a cryoSPARC .cs dataset")
    assert len(err.splitlines()) == 1
