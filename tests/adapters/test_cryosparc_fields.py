"""cryoSPARC particle fields and the coordinate convention, pinned against pyem's converter."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from cryosparc.dataset import Dataset
from cryosparc_fake import SLOT_FIELDS
from cryosparc_fake.harness import PICKER_DESCR

from cryosparc_wrapper import (
    PARTICLE_FIELDS,
    Exposure,
    exposures_from_dataset,
    fractions_to_pixels,
    particles_to_picks,
    picks_to_particles,
    pixels_to_fractions,
)
from pupick_ext import InputError, Picks

NY, NX = 3838, 3710  # a non-square micrograph (rows, columns), as K3 images are


def exposure(uid: int = 7, shape: tuple[int, int] = (NY, NX), name: str = "mic") -> Exposure:
    return Exposure(
        uid=uid,
        path=f"J2/motioncorrected/{uid}_{name}.mrc",
        shape=shape,
        pixel_size=0.83,
        exp_group_id=2,
        name=name,
    )


def test_particle_fields_are_those_of_cryosparc_pickers() -> None:
    dset = picks_to_particles([(exposure(), Picks.for_one("mic", [10.0], [20.0], [1.5]))], min_dist_A=75.0)
    assert dset.descr() == PICKER_DESCR
    fake_fields = [(f"{slot}/{f[0]}", f[1]) for slot, fields in SLOT_FIELDS.items() for f in fields]
    assert [(f[0], np.dtype(f[1]).str if f[1] != "O" else "|O") for f in PARTICLE_FIELDS] == [
        (name, dt) for name, dt in fake_fields
    ]


def test_particles_hold_pixels_as_fractions_of_the_array_shape() -> None:
    picks = Picks.for_one("mic", [0.0, 100.0, 3709.0], [0.0, 3000.0, 10.0], [0.0, 2.0, -1.0])
    dset = picks_to_particles([(exposure(), picks)], min_dist_A=75.0)
    np.testing.assert_allclose(dset["location/center_x_frac"], picks.x / NX, rtol=1e-6)
    np.testing.assert_allclose(dset["location/center_y_frac"], picks.y / NY, rtol=1e-6)
    assert dset["location/micrograph_shape"].tolist() == [[NY, NX]] * 3
    assert dset["location/micrograph_uid"].tolist() == [7] * 3
    assert dset["location/exp_group_id"].tolist() == [2] * 3
    assert list(dset["location/micrograph_path"]) == ["J2/motioncorrected/7_mic.mrc"] * 3
    np.testing.assert_allclose(dset["location/micrograph_psize_A"], 0.83, rtol=1e-6)
    np.testing.assert_allclose(dset["pick_stats/power"], picks.score)
    np.testing.assert_allclose(dset["pick_stats/ncc_score"], 1 / (1 + np.exp(-picks.score)), rtol=1e-6)
    assert len(set(dset["uid"].tolist())) == 3


@pytest.mark.parametrize("flip_y", [False, True])
def test_round_trip_through_a_saved_cs_file(tmp_path, flip_y: bool) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, NX, 50), rng.uniform(0, NY, 50)
    picks = Picks.for_one("mic", x, y, rng.normal(size=50))
    exp = exposure()
    picks_to_particles([(exp, picks)], min_dist_A=50.0, flip_y=flip_y).save(tmp_path / "p.cs")
    back = particles_to_picks(Dataset.load(tmp_path / "p.cs"), [exp], origin="p.cs", flip_y=flip_y)
    np.testing.assert_allclose(back.x, x, atol=1e-3)
    np.testing.assert_allclose(back.y, y, atol=1e-3)
    assert set(back.micrograph) == {"mic"}


def test_flip_y_mirrors_rows() -> None:
    x, y = np.array([100.0]), np.array([1000.0])
    _, plain = pixels_to_fractions(x, y, (NY, NX))
    _, flipped = pixels_to_fractions(x, y, (NY, NX), flip_y=True)
    assert flipped[0] == pytest.approx(1 - plain[0])
    assert fractions_to_pixels([0.5], flipped, (NY, NX), flip_y=True)[1][0] == pytest.approx(1000.0)


# ---------------------------------------------------------------------------------------------
# An independent converter: the formula of pyem's csparc2star (asarnow/pyem,
# pyem/metadata/cryosparc2.py cryosparc_2_cs_particle_locations, called from
# pyem/cli/csparc2star.py). Defaults of the command line: swapxy=True (--noswapxy turns it off)
# and inverty=True (--inverty, a store_false flag, turns it OFF). Written here from its
# description, not copied:
#   y_frac <- 1 - y_frac                                        if inverty
#   (X, Y) <- round((x_frac, y_frac) * shape[::-1])             if swapxy   (shape = [ny, nx])
#   (X, Y) <- round((x_frac, y_frac) * shape)                   otherwise
# ---------------------------------------------------------------------------------------------
def pyem_csparc2star(x_frac, y_frac, shape, swapxy: bool = True, inverty: bool = True):
    shape = np.asarray(shape, dtype=np.float64).reshape(-1, 2)
    x_frac = np.asarray(x_frac, dtype=np.float64)
    y_frac = np.asarray(y_frac, dtype=np.float64)
    if inverty:
        y_frac = 1 - y_frac
    scale = shape[:, ::-1] if swapxy else shape
    return np.round(x_frac * scale[:, 0]), np.round(y_frac * scale[:, 1])


def test_convention_against_pyem_csparc2star() -> None:
    """Where our fractions and pyem's converter agree, and where they do not.

    - x: agrees with pyem's default (swapxy) up to its rounding to whole pixels.
    - y, our default (no flip): agrees with ``csparc2star --inverty`` (no inversion); pyem's
      default inverts y, giving ny - y: the disputed direction (see docs/cryosparc.md).
    - y with our ``--flip-y``: agrees with pyem's default.
    - ``--noswapxy`` scales x by ny: wrong on non-square micrographs (pyem says "unlikely").
    """
    rng = np.random.default_rng(1)
    x, y = rng.uniform(50, NX - 50, 200), rng.uniform(50, NY - 50, 200)
    shape = np.tile([NY, NX], (200, 1))

    xf, yf = pixels_to_fractions(x, y, shape)
    X, Y = pyem_csparc2star(xf, yf, shape, inverty=False)
    assert np.abs(X - x).max() <= 0.5 + 1e-3 and np.abs(Y - y).max() <= 0.5 + 1e-3
    X, Y = pyem_csparc2star(xf, yf, shape)  # pyem's default
    assert np.abs(X - x).max() <= 0.5 + 1e-3
    assert np.abs(Y - (NY - y)).max() <= 0.5 + 1e-3 and np.abs(Y - y).max() > 100

    xf, yf = pixels_to_fractions(x, y, shape, flip_y=True)
    X, Y = pyem_csparc2star(xf, yf, shape)
    assert np.abs(X - x).max() <= 0.5 + 1e-3 and np.abs(Y - y).max() <= 0.5 + 1e-3

    X, _ = pyem_csparc2star(*pixels_to_fractions(x, y, shape), shape, swapxy=False)
    np.testing.assert_allclose(X, np.round(x / NX * NY))


def exposures_dataset(n: int = 2) -> Dataset:
    dset = Dataset.allocate(
        n,
        [
            ("micrograph_blob/path", "O"),
            ("micrograph_blob/shape", "<u4", (2,)),
            ("micrograph_blob/psize_A", "<f4"),
            ("mscope_params/exp_group_id", "<u4"),
        ],
    )
    dset["micrograph_blob/path"] = np.array(
        [f"J2/motioncorrected/{i}_mic_{i}.mrc" for i in range(n)], dtype=object
    )
    dset["micrograph_blob/shape"] = np.array([[NY, NX]] * n, dtype=np.uint32)
    dset["micrograph_blob/psize_A"] = np.float32(0.83)
    dset["mscope_params/exp_group_id"] = np.uint32(3)
    return dset


def test_exposures_from_dataset() -> None:
    dset = exposures_dataset()
    exposures = exposures_from_dataset(dset, "J2.exposures")
    assert [e.name for e in exposures] == ["0_mic_0", "1_mic_1"]
    assert exposures[0].shape == (NY, NX) and exposures[0].exp_group_id == 3
    assert exposures[0].pixel_size == pytest.approx(0.83)
    assert exposures[1].uid == int(dset["uid"][1])


def test_exposures_without_micrograph_paths_are_refused() -> None:
    movies = Dataset.allocate(2, [("movie_blob/path", "O")])
    with pytest.raises(InputError, match="J1.movies: exposures carry no micrograph_blob/path"):
        exposures_from_dataset(movies, "J1.movies")
    dset = exposures_dataset()
    dset["micrograph_blob/path"] = np.array(["", "J2/a.mrc"], dtype=object)
    with pytest.raises(InputError, match="1 of 2 exposures have an empty micrograph_blob/path"):
        exposures_from_dataset(dset, "x.cs")
    with pytest.raises(InputError, match="holds no exposures"):
        exposures_from_dataset(Dataset.allocate(0, [("micrograph_blob/path", "O")]), "x.cs")


def test_labels_match_exposures_by_uid_then_path(caplog) -> None:
    exposures = exposures_from_dataset(exposures_dataset(), "J2")
    labels = Dataset.allocate(
        3,
        [
            ("location/micrograph_uid", "<u8"),
            ("location/micrograph_path", "O"),
            ("location/center_x_frac", "<f4"),
            ("location/center_y_frac", "<f4"),
        ],
    )
    labels["location/micrograph_uid"] = np.array([exposures[1].uid, 0, 12345], dtype=np.uint64)
    labels["location/micrograph_path"] = np.array(["", exposures[0].path, "J9/other.mrc"], dtype=object)
    labels["location/center_x_frac"] = np.float32(0.5)
    labels["location/center_y_frac"] = np.float32(0.25)
    with caplog.at_level(logging.WARNING):
        picks = particles_to_picks(labels, exposures, origin="J3.particles")
    assert list(picks.micrograph) == [exposures[1].name, exposures[0].name]
    np.testing.assert_allclose(picks.x, 0.5 * NX)
    np.testing.assert_allclose(picks.y, 0.25 * NY)
    assert "1 of 3 particles lie on micrographs not among the exposures" in caplog.text
    labels["location/micrograph_uid"] = np.uint64(999)
    labels["location/micrograph_path"] = np.array(["a", "b", "c"], dtype=object)
    with pytest.raises(InputError, match="none of the 3 particles lies on one of the 2 exposures"):
        particles_to_picks(labels, exposures, origin="J3.particles")
