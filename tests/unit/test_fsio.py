"""Atomic output: a file appears whole or not at all, and no temporary files are left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pupick_ext import OutputError, atomic_path, write_atomic


def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        assert tmp.exists()  # created, so nobody else takes the name
        tmp.write_text("new")
        assert not target.exists()  # not visible until the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "picks.star"
    target.write_text("old content")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half writ")
            raise RuntimeError("boom")
    assert target.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picks.star"]


def test_atomic_path_cleans_up_on_keyboard_interrupt(tmp_path: Path) -> None:
    target = tmp_path / "model.pupick"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_when_the_block_removes_its_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    with pytest.raises(OutputError, match="x.txt"):
        with atomic_path(target) as tmp:
            tmp.unlink()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_creates_parent_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("deep")
    assert target.read_text() == "deep"


def test_write_atomic_text_and_bytes(tmp_path: Path) -> None:
    text = write_atomic(tmp_path / "t.txt", "héllo\n")
    assert text == tmp_path / "t.txt"
    assert text.read_text(encoding="utf-8") == "héllo\n"
    data = write_atomic(tmp_path / "b.bin", b"\x00\x01\xff")
    assert data.read_bytes() == b"\x00\x01\xff"
    write_atomic(tmp_path / "t.txt", "replaced")
    assert (tmp_path / "t.txt").read_text() == "replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "t.txt"]


def test_write_atomic_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    target.write_text("keep")
    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # type: ignore[arg-type]
    assert target.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_raises_and_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    target.write_text("keep")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            write_atomic(target, "new")
    finally:
        tmp_path.chmod(0o755)
    assert target.read_text() == "keep"
