"""Atomic writes: a reader sees the old file or the new one, with the usual permissions."""

import stat

import pytest

from fewshot.io import atomic_write, atomic_write_text


def test_atomic_write_gives_the_permissions_open_gives(tmp_path):
    plain = tmp_path / "plain.md"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "report.md", "x")
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = atomic_write_text(tmp_path / "report.json", "old")

    def fail_halfway(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail_halfway)
    assert path.read_text() == "old"
    assert not list(tmp_path.glob(".*.tmp"))
