"""``tubelet check-videos``: verdicts per file, parallel run, bad-file list, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tubelet.cli import main
from tubelet.data.check import check_video, check_videos, video_paths


@pytest.fixture
def folder(tmp_path, write_index_video) -> Path:
    root = tmp_path / "videos"
    root.mkdir()
    for i in range(3):
        write_index_video(root / f"ok{i}.mp4", 12 + i)
    write_index_video(root / "matroska_named.mp4", 10, container="matroska")
    (root / "notes.txt").write_text("not a video, not checked")
    return root


def add_bad_files(root: Path) -> dict[str, str]:
    """zero-byte, truncated and random-bytes files, and the reason each must get."""
    (root / "zero.mp4").write_bytes(b"")
    data = (root / "ok2.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])
    (root / "noise.avi").write_bytes(bytes(range(256)) * 12)
    return {"zero.mp4": "empty file (0 bytes)", "cut.mp4": "Invalid data", "noise.avi": "Invalid data"}


def test_check_video_verdicts(folder):
    assert check_video(folder / "ok0.mp4").ok
    assert check_video(folder / "matroska_named.mp4").ok  # FFmpeg reads the content, not the name
    missing = check_video(folder / "gone.mp4")
    assert not missing.ok and missing.reason == "file not found"


def test_check_videos_in_parallel_keeps_order(folder):
    reasons = add_bad_files(folder)
    paths = video_paths(folder)
    assert [p.name for p in paths] == sorted(["ok0.mp4", "ok1.mp4", "ok2.mp4", "matroska_named.mp4", *reasons])
    results = check_videos(paths, workers=2)
    assert [r.path for r in results] == [str(p) for p in paths]
    for result in results:
        name = Path(result.path).name
        assert result.ok == (name not in reasons), result
        if name in reasons:
            assert reasons[name] in result.reason


def test_cli_exit_codes_and_bad_list(folder, tmp_path, capsys):
    out = tmp_path / "report" / "bad.txt"
    assert main(["check-videos", str(folder), "--workers", "1", "--out", str(out)]) == 0
    assert out.read_text() == "" and "checked 4 videos: 4 good, 0 bad" in capsys.readouterr().out

    add_bad_files(folder)
    (tmp_path / "list.txt").write_text("videos/ok0.mp4 0\nvideos/zero.mp4 1\nvideos/absent.mp4 1\n")
    assert main(["check-videos", str(tmp_path / "list.txt"), "--workers", "2", "--out", str(out)]) == 1
    lines = out.read_text().splitlines()
    assert lines == [f"{folder / 'zero.mp4'}\tempty file (0 bytes)", f"{folder / 'absent.mp4'}\tfile not found"]
    printed = capsys.readouterr().out
    assert "checked 3 videos: 1 good, 2 bad" in printed and f"BAD  {folder / 'absent.mp4'}: file not found" in printed


def test_cli_unreadable_list_is_exit_2(tmp_path, capsys):
    (tmp_path / "list.txt").write_text("a.mp4 0\nbroken\n")
    assert main(["check-videos", str(tmp_path / "list.txt")]) == 2
    assert "list.txt, line 2" in capsys.readouterr().err
    assert main(["check-videos", str(tmp_path / "nothing.txt")]) == 2


def test_cli_folder_without_videos_is_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a video")
    assert main(["check-videos", str(tmp_path)]) == 2
    assert f"{tmp_path} holds no video files" in capsys.readouterr().err
