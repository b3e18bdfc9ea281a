"""Outputs on a hostile file system: a full disk, a file where a directory should be, a parent
that cannot exist. Every entry point stops with one line naming the place, and nothing that does
not parse is left under a final name (``docs/reliability.md``, "Atomic outputs").

The full disk is made three ways:

- **numpy's lost last buffer** (portable): cryosparc-tools' ``Dataset.save`` writes through
  ``np.save`` -> ``ndarray.tofile``, i.e. C stdio; on a full disk ``fclose`` can fail to flush the
  last buffer and nothing reports it, so the file is short and no exception is raised. The fake
  wraps ``numpy.save`` (what ``Dataset.save`` calls) to do exactly that: write everything, then
  drop the tail that sat in the last stdio buffer (the bytes past the last 4096-byte boundary),
  and return normally.
- **a real full tmpfs** (Linux, root, ``mount`` allowed; skipped otherwise): the same failure,
  calibrated on the spot by saving datasets of growing size until a raw ``Dataset.save`` returns
  with a file ``Dataset.load`` refuses.
- **ENOSPC from fsync** (portable): ``os.fsync`` raising ``OSError(ENOSPC)``, as network file
  systems report a full disk only when the data is flushed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import exposures_dataset, files_under, leftovers, run_cryosparc, run_pupick

from pupick_ext import OutputError

BUFFER = 4096  #: glibc's stdio buffer for a regular file (st_blksize on most file systems)


def _offline_args(corpus, good_model, tmp_path, out: Path) -> list:
    names = [f"Micrographs/{n}.mrc" for n in corpus.good]
    exposures_cs = tmp_path / "exposures.cs"
    exposures_dataset(corpus.project, names, [1.5] * len(names)).save(exposures_cs)
    return ["-q", "offline", "--project-dir", corpus.project, "--exposures", exposures_cs, "--out", out,
            "--mode", "extract", "--model", good_model, "--threshold", "-8", "--device", "cpu"]


def _one_error_line(run, prefix: str) -> str:
    assert run.rc != 0, run.text
    assert "Traceback" not in run.text, run.text
    assert len(run.err_lines) == 1 and run.err_lines[0].startswith(prefix), run.err
    return run.err_lines[0]


def test_offline_particles_cs_torn_by_a_lost_stdio_buffer(corpus, good_model, tmp_path, monkeypatch) -> None:
    real_save = np.save

    def save_losing_the_last_buffer(file, arr, *args, **kwargs):
        real_save(file, arr, *args, **kwargs)
        file.flush()
        size = os.fstat(file.fileno()).st_size
        os.ftruncate(file.fileno(), size - (size % BUFFER or BUFFER) if size > BUFFER else size // 2)

    out = corpus.project / "imports" / "torn"
    args = _offline_args(corpus, good_model, tmp_path, out)
    monkeypatch.setattr(np, "save", save_losing_the_last_buffer)
    run = run_cryosparc(args, corpus.project, out)
    line = _one_error_line(run, "pupick-cryosparc: error: ")
    assert "particles.cs" in line and "does not read back" in line, line
    assert not (out / "particles.cs").exists() and not (out / "particles.csg").exists()
    assert not leftovers(out)
    # the per-micrograph STAR files are complete (each verified) and stay
    assert len(list((out / "coordinates").glob("*_pupick.star"))) == len(corpus.good)


def test_csg_failure_leaves_no_particles_cs(corpus, good_model, tmp_path, monkeypatch) -> None:
    """The second file of the set fails to land: the first is not left alone under its name."""
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".csg"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    out = corpus.project / "imports" / "halfset"
    args = _offline_args(corpus, good_model, tmp_path, out)
    monkeypatch.setattr(os, "replace", replace)
    run = run_cryosparc(args, corpus.project, out)
    line = _one_error_line(run, "pupick-cryosparc: error: ")
    assert "particles.csg" in line and "No space left on device" in line
    assert not (out / "particles.cs").exists() and not (out / "particles.csg").exists()
    assert not leftovers(out)


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size_kb: int = 64):
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_real_full_tmpfs_dataset_save(tmp_path) -> None:
    """On a real full file system Dataset.save can return with a short file; save_particles never
    leaves one under its final name."""
    from cryosparc.dataset import Dataset

    from cryosparc_wrapper.fields import PARTICLE_FIELDS
    from cryosparc_wrapper.offline import dataset_reads_back, save_particles

    def dataset(n: int) -> Dataset:
        dset = Dataset.allocate(n, list(PARTICLE_FIELDS))
        paths = ["J1/motioncorrected/mic_patch_aligned.mrc"] * n
        dset["location/micrograph_path"] = np.array(paths, dtype=object)
        return dset

    with tiny_tmpfs(tmp_path / "disk") as disk:
        (disk / "filler").write_bytes(b"x" * (64 - 12) * 1024)
        torn_at = None
        for n in range(1, 400):  # find a size whose raw save "succeeds" with a torn file
            target = disk / "raw.cs"
            try:
                dataset(n).save(target)
            except OSError:
                target.unlink(missing_ok=True)
                break
            try:
                Dataset.load(target)
            except Exception:  # noqa: BLE001 - the torn file
                torn_at = n
                target.unlink()
                break
            target.unlink()
        if torn_at is None:
            pytest.skip("this file system reports the full disk to numpy; no silent truncation to guard")
        # either the torn .cs is caught on reading it back, or the .csg then meets the full disk
        torn = r"particles\.cs: (the written file does not read back|cannot write: No space)"
        with pytest.raises(OutputError, match=torn):
            save_particles(dataset(torn_at), disk / "particles.cs", disk / "particles.csg", "csg\n")
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
        # the .cs alone: Dataset.save returns normally, the read-back is what catches it
        from pupick_ext import atomic_path

        with pytest.raises(OutputError, match=r"particles\.cs: the written file does not read back"):
            with atomic_path(disk / "particles.cs", verify=dataset_reads_back(dataset(torn_at))) as tmp:
                dataset(torn_at).save(tmp)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_real_full_tmpfs_pupick_extract(corpus, good_model, tmp_path) -> None:
    with tiny_tmpfs(tmp_path / "disk", size_kb=16) as disk:
        (disk / "filler").write_bytes(b"x" * 12 * 1024)
        out = disk / "picks"
        run = run_pupick(["-q", "extract", "-m", corpus.cases["mixed_pixel_sizes"].star,
                          "--model", good_model, "-o", f"{out}/", "--device", "cpu", "-t", "-8"],
                         corpus.project, out)
        line = _one_error_line(run, "pupick: error: ")
        assert "No space left on device" in line and str(disk) in line, line
        for path in files_under(out):  # whatever landed is whole
            assert not path.name.endswith(".part")


def test_fsync_enospc_is_one_line_and_no_file(corpus, good_model, tmp_path, monkeypatch) -> None:
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out"
    out.mkdir()
    (out / "placeholder").mkdir()
    run = run_pupick(["-q", "extract", "-m", corpus.cases["model_corrupt"].star, "--model", good_model,
                      "-o", f"{out}/", "--device", "cpu", "-t", "-8"], corpus.project, out)
    line = _one_error_line(run, "pupick: error: ")
    assert "No space left on device" in line and "file system is full" in line
    assert not [p for p in files_under(out) if p.suffix == ".star"] and not leftovers(out)


@pytest.mark.parametrize("command", ["train", "extract", "convert", "offline"])
@pytest.mark.parametrize("place", ["existing_file", "parent_is_file"])
def test_output_location_errors_are_one_line(command, place, corpus, good_model, tmp_path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    target = blocker if place == "existing_file" else blocker / "sub" / "out"
    first = f"Micrographs/{corpus.good[0]}.mrc"
    if command == "offline":
        run = run_cryosparc(_offline_args(corpus, good_model, tmp_path, target), corpus.project, target)
        prefix = "pupick-cryosparc: error: "
    else:
        prefix = "pupick: error: "
        args = {
            "train": ["train", "-m", corpus.cases["labels_partly_unusable"].star, "-l",
                      corpus.cases["labels_partly_unusable"].labels_file, "-d", "150", "-o", target],
            "extract": ["extract", "-m", first, "--model", good_model, "-o", f"{target}/"],
            "convert": ["convert", corpus.cases["labels_partly_unusable"].labels_file, f"{target}/",
                        "--to", "star"],
        }[command]
        run = run_pupick(["-q", *args], corpus.project, target)
    line = _one_error_line(run, prefix)
    assert str(blocker) in line and ("not a directory" in line or "is a file" in line), line
    assert blocker.read_text() == "a file, not a directory\n"


def test_bom_micrograph_text_list(corpus, good_model, tmp_path) -> None:
    """A micrograph text list saved with a UTF-8 byte-order mark reads like one without."""
    listing = tmp_path / "mics.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + f"Micrographs/{corpus.good[0]}.mrc\n".encode())
    out = tmp_path / "o"
    run = run_pupick(["-q", "extract", "-m", listing, "--model", good_model, "-o", f"{out}/",
                      "--device", "cpu"], corpus.project, out)
    assert run.rc == 0, run.text
    assert (out / f"{corpus.good[0]}.star").is_file()


def test_sliver_picture_is_bounded(corpus, tmp_path) -> None:
    """A 1 x 256 micrograph gives a picture of ordinary size, quickly (it once drew 699 x 346,976 px)."""
    from PIL import Image

    from pupick_ext import Picks, plot_picks

    for name in ("sliver", "small"):
        png = plot_picks(corpus.project / "bad" / f"{name}.mrc", Picks.for_one(name, [0.5], [0.5], [1.0]),
                         tmp_path / f"{name}.png", 5.0)
        width, height = Image.open(png).size
        assert width <= 2000 and height <= 4000, (name, width, height)


def test_rerun_after_an_empty_run_is_not_silent(corpus, good_model, tmp_path) -> None:
    """A run that picks nothing says so; a re-run that would skip only empty files says that."""
    out = tmp_path / "o"
    star = corpus.cases["model_corrupt"].star
    base = ["extract", "-m", star, "--model", good_model, "-o", f"{out}/", "--device", "cpu"]
    first = run_pupick([*base, "-t", "50"], corpus.project, out)
    assert first.rc == 0 and "no particles picked on any of the 1 micrograph(s) at threshold 50" in first.err
    again = run_pupick([*base, "-t", "-8"], corpus.project, out)
    assert again.rc == 0, again.text
    assert "are empty (an earlier run picked nothing there)" in again.err
