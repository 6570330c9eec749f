"""The atomic writers: old or new content, never half, and ordinary file modes."""

import errno
import os

import pytest

from tubelet import files


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    files.atomic_write_text(target, "old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        files.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        files.atomic_write_text(tmp_path / "a.txt", "x")
        with files.atomic_folder(tmp_path / "folder") as tmp:
            fd = os.open(tmp / "b.bin", os.O_CREAT | os.O_WRONLY, 0o600)  # as safetensors creates its files
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "folder" / "b.bin").stat().st_mode & 0o777 == mode


def test_a_folder_is_replaced_whole(tmp_path):
    with files.atomic_folder(tmp_path / "f") as tmp:
        (tmp / "one").write_text("1")
    with pytest.raises(RuntimeError):
        with files.atomic_folder(tmp_path / "f") as tmp:
            (tmp / "two").write_text("2")
            raise RuntimeError("killed")
    assert [p.name for p in (tmp_path / "f").iterdir()] == ["one"]
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    with files.atomic_folder(tmp_path / "f") as tmp:
        (tmp / "two").write_text("2")
    assert [p.name for p in (tmp_path / "f").iterdir()] == ["two"]
