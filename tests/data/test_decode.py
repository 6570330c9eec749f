"""Decoding by timestamp: exact frames on constant-rate, offset-start, variable-rate and
MPEG-TS files; seeking; early stop; threads; closed files; damaged files; backends."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from tubelet.data import decode
from tubelet.data.decode import DecodeError, decoder_threads, open_video, probe_video
from tubelet.data.sampling import index_times

# frame timestamps (ms) of the variable-frame-rate file: gaps of 10 to 300 ms
VFR_PTS = [0, 10, 50, 60, 200, 210, 400, 700, 710, 720, 740, 800]


def expected_at(pts: list[int], times_ms: list[float]) -> list[int]:
    """The frame on screen at each time: the last frame whose pts is <= the time (brute force)."""
    return [max(k for k, p in enumerate(pts) if p - pts[0] <= t) for t in times_ms]


def test_constant_rate_every_frame_any_order(index_video, frame_indices):
    path = index_video("cfr.mp4", 40, gop=8)
    with open_video(path) as video:
        assert video.info.num_frames == 40 and video.info.fps == 30
        assert video.info.duration == pytest.approx(40 / 30) and video.info.start == 0
        assert (video.info.height, video.info.width) == (32, 32)
        wanted = [39, 0, 17, 17, 5, 38, 8]
        frames = video.frames_at(index_times(wanted, video.info))
    assert frames.dtype == torch.uint8 and frames.shape == (7, 32, 32, 3)
    assert frame_indices(frames) == wanted


def test_first_timestamp_not_zero(index_video, frame_indices):
    path = index_video("offset.mp4", 30, pts=range(45, 75), gop=10)
    info = probe_video(path)
    assert info.start == pytest.approx(45 / 30, abs=1e-3) and info.num_frames == 30
    with open_video(path) as video:
        frames = video.frames_at(index_times(list(range(30)), video.info))
        # the same times as the first frame's own: time 0 is the first frame, not pts 0
        assert frame_indices(video.frames_at([0.0, 1 / 30])) == [0, 1]
    assert frame_indices(frames) == list(range(30))


def test_variable_frame_rate_picks_frame_on_screen(index_video, frame_indices):
    path = index_video("vfr.mp4", len(VFR_PTS), pts=VFR_PTS, time_base=Fraction(1, 1000))
    times_ms = [0, 5, 9, 10, 49, 55, 150, 205, 399, 401, 699.5, 705, 715, 730, 790, 810]
    with open_video(path) as video:
        assert video.info.num_frames == len(VFR_PTS)
        frames = video.frames_at([t / 1000 for t in times_ms])
    assert frame_indices(frames) == expected_at(VFR_PTS, times_ms)


def test_variable_rate_with_offset_in_matroska(index_video, frame_indices):
    # Matroska states no frame count or stream duration: the probe reads the packet index
    pts = [p + 500 for p in VFR_PTS]
    path = index_video("vfr.mkv", len(pts), pts=pts, time_base=Fraction(1, 1000))
    info = probe_video(path)
    assert info.num_frames == len(pts) and info.start == pytest.approx(0.5)
    assert info.duration > (VFR_PTS[-1] - VFR_PTS[0]) / 1000
    times_ms = [0, 12, 61, 399, 400, 701, 799, 805]
    with open_video(path) as video:
        assert frame_indices(video.frames_at([t / 1000 for t in times_ms])) == expected_at(VFR_PTS, times_ms)


def test_mpeg_ts_seek_fallback(index_video, frame_indices):
    # MPEG-TS streams start at a non-zero pts and its seeks can land past the target
    path = index_video("clip.ts", 12, container="mpegts")
    with open_video(path) as video:
        assert video.info.start > 0
        assert frame_indices(video.frames_at(index_times([11, 3, 0], video.info))) == [11, 3, 0]


def test_seeks_to_keyframe_and_stops_after_last_wanted(index_video, frame_indices, monkeypatch):
    path = index_video("gop.mp4", 60, gop=10)
    decoded = []
    original = decode._LazyFrame.__init__

    def counting(self, frame, time):
        decoded.append(time)
        original(self, frame, time)

    monkeypatch.setattr(decode._LazyFrame, "__init__", counting)
    with open_video(path) as video:
        frames = video.frames_at(index_times([45, 47], video.info))
    assert frame_indices(frames) == [45, 47]
    # from the keyframe at 40 up to the first frame past 47: 9 frames, not 49
    assert len(decoded) == 9 and min(decoded) == pytest.approx(40 / 30)


def test_decoder_threads(index_video):
    assert decoder_threads() == min(4, os.cpu_count() or 1)
    with open_video(index_video("t.mp4", 4), threads=2) as video:
        assert video._stream.codec_context.thread_count == 2
        assert str(video._stream.thread_type).endswith("SLICE")


class _ThreadsInWorker(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return decoder_threads()


@pytest.mark.slow
def test_one_decoder_thread_inside_dataloader_workers():
    loader = torch.utils.data.DataLoader(_ThreadsInWorker(), num_workers=1, batch_size=None)
    assert list(loader) == [1]


def _open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path.resolve())
        except OSError:
            pass
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_files_are_closed(index_video, tmp_path):
    path = index_video("c.mp4", 6)
    with open_video(path) as video:
        video.frames_at([0.0])
        assert _open_fds_to(path) == 1
    assert _open_fds_to(path) == 0
    audio = tmp_path / "audio.mp4"
    _write_audio(audio)
    with pytest.raises(DecodeError, match="no video stream"):
        open_video(audio)
    assert _open_fds_to(audio) == 0


def _write_audio(path: Path) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w", format="wav") as output:
        stream = output.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def test_damaged_files_raise_decode_error_naming_the_file(index_video, tmp_path):
    good = index_video("good.mp4", 30)
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(torch.randint(0, 256, (4000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path, reason in [(zero, "Invalid data"), (noise, "Invalid data"), (cut, "Invalid data"), (tmp_path / "none.mp4", "not found")]:
        with pytest.raises(DecodeError, match=reason) as error:
            with open_video(path) as video:
                video.frames_at([0.0])
        assert error.value.path == str(path) and str(path) in str(error.value)


def test_truncated_stream_that_metadata_says_is_longer(index_video, tmp_path, frame_indices):
    # with its index first, a cut MP4 opens and promises all 60 frames, but its data stops early
    whole = index_video("whole.mp4", 60, container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 3 // 4])
    with open_video(cut) as video:
        assert video.info.num_frames == 60
        assert frame_indices(video.frames_at([0.0])) == [0]
        with pytest.raises(DecodeError, match="Invalid data|truncated"):
            video.frames_at(index_times([59], video.info))


def test_stream_ending_early_is_called_truncated(index_video, monkeypatch):
    path = index_video("short.mp4", 30)
    with open_video(path) as video:
        # as if the container claimed 3 s for its 1 s of frames
        video.info = decode.VideoInfo(duration=3.0, fps=30.0, num_frames=90, height=32, width=32)
        assert video.frames_at([1.05]).shape[0] == 1  # the last frame still covers 1.0-1.1 s
        with pytest.raises(DecodeError, match="stream ends at 0.967 s but its metadata promises 3.000 s"):
            video.frames_at([2.5])


def test_frames_at_needs_times(index_video):
    with open_video(index_video("a.mp4", 3)) as video, pytest.raises(ValueError, match="at least one time"):
        video.frames_at([])


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown decoding backend 'opencv'"):
        open_video("x.mp4", backend="opencv")


def _torchcodec_installed() -> bool:
    try:
        import torchcodec  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_torchcodec_installed(), reason="torchcodec is installed: the missing-package error cannot happen")
def test_torchcodec_missing_gives_clear_error(index_video):
    with pytest.raises(ImportError, match="pip install torchcodec"):
        open_video(index_video("a.mp4", 3), backend="torchcodec")


@pytest.mark.skipif(not _torchcodec_installed(), reason="torchcodec is not installed in this environment")
def test_torchcodec_matches_pyav(index_video, frame_indices):
    path = index_video("offset.mp4", 30, pts=range(45, 75), gop=10)
    with open_video(path, backend="torchcodec") as video:
        assert video.info.num_frames == 30
        wanted = [29, 0, 12, 12]
        assert frame_indices(video.frames_at(index_times(wanted, video.info))) == wanted
