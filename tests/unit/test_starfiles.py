"""The one STAR writer: pupick's exact layout and the RELION 3.1 layout of the demo data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from pupick_ext.io.starfiles import read_star, write_star


def _blocks() -> dict[str, pd.DataFrame]:
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographPixelSize": [1.5]})
    micrographs = pd.DataFrame({"rlnMicrographName": ["Micrographs/a.mrc", "Micrographs/b.mrc"],
                                "rlnOpticsGroup": [1, 1], "rlnDefocusU": [20956.529532129, 1.0 / 3.0]})
    return {"optics": optics, "micrographs": micrographs}


def test_relion31_layout(tmp_path: Path) -> None:
    path = write_star(_blocks(), tmp_path / "micrographs_ctf.star", layout="relion31")
    lines = path.read_text().splitlines()
    assert lines[:3] == ["# version 30001", "", "data_optics"]
    assert lines.count("# version 30001") == 2  # before each block, as RELION 3.1 writes
    assert lines[lines.index("data_micrographs") - 2] == "# version 30001"
    assert "Micrographs/a.mrc 1 20956.529532" in lines  # space separated, six decimals
    assert "Micrographs/b.mrc 1 0.333333" in lines
    assert not any(line.startswith("# Created by") for line in lines)  # no time stamp
    assert not any("\t" in line for line in lines)
    tables = read_star(path)
    assert list(tables["micrographs"]["rlnMicrographName"]) == ["Micrographs/a.mrc", "Micrographs/b.mrc"]
    np.testing.assert_allclose(tables["micrographs"]["rlnDefocusU"], [20956.529532, 0.333333])
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_exact_layout_keeps_every_digit(tmp_path: Path) -> None:
    path = write_star(_blocks(), tmp_path / "exact.star")
    text = path.read_text()
    assert text.startswith("# version 30001\n") and text.count("# version 30001") == 1
    assert "\t" in text
    assert starfile.read(path)["micrographs"]["rlnDefocusU"].iloc[1] == 1.0 / 3.0


@pytest.mark.parametrize("layout", ["exact", "relion31"])
def test_equal_tables_give_byte_identical_files(tmp_path: Path, layout: str) -> None:
    first = write_star(_blocks(), tmp_path / "a.star", layout=layout)  # type: ignore[arg-type]
    second = write_star(_blocks(), tmp_path / "b.star", layout=layout)  # type: ignore[arg-type]
    assert first.read_bytes() == second.read_bytes()


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown STAR layout"):
        write_star(_blocks(), tmp_path / "x.star", layout="relion5")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_demo_star_files_are_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    from pupick_ext.demo.synthetic import generate_demo_data

    runs = [generate_demo_data(tmp_path / run, n_micrographs=1, preset="easy", seed=3, shape=(228, 228))
            for run in ("a", "b")]
    for relative in ("micrographs_ctf.star", "truth/mic_000.star", "truth.txt"):
        assert (runs[0].outdir / relative).read_bytes() == (runs[1].outdir / relative).read_bytes()
    written = (runs[0].outdir / "micrographs_ctf.star").read_text()
    assert written.startswith("# version 30001\n\ndata_optics\n")
