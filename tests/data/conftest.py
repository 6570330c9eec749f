"""Tiny encoded videos with known content, for the data tests.

Each frame shows its own index as a binary pattern of 8x8 blocks (bit ``b`` of the index is block
``b`` in row-major order: light = 1, dark = 0), which survives H.264 compression and can be read
back from any decoded frame. Fixtures:

- ``write_index_video(path, num_frames, *, height=32, width=32, fps=30, pts=None,
  time_base=None, gop=None, codec="libx264", container=None, container_options=None) -> Path``:
  encode such a clip with PyAV (``container_options={"movflags": "faststart"}`` puts an MP4's
  index first). ``pts`` sets every frame's timestamp by hand (in ``time_base`` units, default ``1/fps``),
  for a non-zero first timestamp or a variable frame rate; ``gop`` sets the keyframe interval.
- ``frame_indices(frames uint8 [T, H, W, C]) -> list[int]``: the index shown in each frame.
- ``index_image(index, height, width) -> uint8 [H, W, 3]``: one frame's picture.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np
import pytest
import torch

BLOCK = 8
DARK, LIGHT = 32, 224


def index_image(index: int, height: int = 32, width: int = 32) -> np.ndarray:
    """uint8 ``[H, W, 3]`` showing ``index`` in binary, one 8x8 block a bit."""
    rows, cols = height // BLOCK, width // BLOCK
    if index >= 2 ** (rows * cols):
        raise ValueError(f"index {index} needs more than the {rows * cols} blocks of a {height}x{width} frame")
    bits = [(index >> b) & 1 for b in range(rows * cols)]
    grid = np.array([LIGHT if bit else DARK for bit in bits], dtype=np.uint8).reshape(rows, cols)
    image = np.full((height, width), DARK, dtype=np.uint8)
    image[: rows * BLOCK, : cols * BLOCK] = grid.repeat(BLOCK, 0).repeat(BLOCK, 1)
    return np.repeat(image[:, :, None], 3, axis=2)


def read_index(frame: np.ndarray | torch.Tensor) -> int:
    """The index shown by one decoded frame ``[H, W, C]`` (block means thresholded at mid-grey)."""
    frame = torch.as_tensor(np.asarray(frame)).float().mean(-1)  # [H, W]
    rows, cols = frame.shape[0] // BLOCK, frame.shape[1] // BLOCK
    blocks = frame[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK).mean((1, 3)).flatten()
    return sum(1 << b for b, value in enumerate(blocks.tolist()) if value > (DARK + LIGHT) / 2)


def frame_indices(frames: torch.Tensor) -> list[int]:
    """The index shown in each frame of uint8 ``[T, H, W, C]``."""
    return [read_index(frame) for frame in frames]


def write_index_video(
    path: str | Path,
    num_frames: int,
    *,
    height: int = 32,
    width: int = 32,
    fps: int = 30,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    gop: int | None = None,
    codec: str = "libx264",
    container: str | None = None,
    container_options: dict[str, str] | None = None,
    image: Callable[[int, int, int], np.ndarray] = index_image,
) -> Path:
    """Encode ``num_frames`` frames of ``image(i, height, width)``; see the module docstring."""
    path = Path(path)
    time_base = time_base or Fraction(1, fps)
    pts = list(range(num_frames)) if pts is None else list(pts)
    with av.open(str(path), "w", format=container, options=container_options or {}) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(image(i, height, width), format="rgb24")
            frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


@pytest.fixture
def index_video(tmp_path: Path) -> Callable[..., Path]:
    """``index_video(name, num_frames, **options)``: :func:`write_index_video` into ``tmp_path``."""

    def make(name: str, num_frames: int, **options) -> Path:
        return write_index_video(tmp_path / name, num_frames, **options)

    return make


@pytest.fixture(name="write_index_video")
def _write_index_video() -> Callable[..., Path]:
    return write_index_video


@pytest.fixture(name="frame_indices")
def _frame_indices() -> Callable[[torch.Tensor], list[int]]:
    return frame_indices


@pytest.fixture(name="index_image")
def _index_image() -> Callable[..., np.ndarray]:
    return index_image
