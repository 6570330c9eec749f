"""A synthetic video dataset, written as real H.264 files: ``tubelet synth``.

Each video shows one bright object over a random background (a two-colour gradient in a random
direction, fixed pixel noise, and a thin line at a random place as a distractor). The object's
colour, size, position and (for the moving classes) its shape among square, disc and triangle
are random too, so no single pixel or colour gives the class away. The twelve classes:

Classes that need the ORDER of the frames. Each pair shows the same kind of clip, played
forwards or backwards: a clip of the second class is a clip of the first, time-reversed (the
same random draw gives exactly the reversed frames), so no single frame and no unordered set of
frames can tell the two apart. Each forward clip starts from a typical state (on the left, at
12 o'clock, small, absent), so what the first frames show, together with *when* they are shown,
gives the class away: a small model learns the pairs quickly, a model blind to order never.

* ``moving_right`` / ``moving_left``: the object slides horizontally across 50-60% of the frame,
  from the left part to the right part (or back).
* ``rotating_clockwise`` / ``rotating_anticlockwise``: a clock hand turns 180-270 degrees about a
  hub, clockwise on screen from about 12 o'clock (or anticlockwise back to it).
* ``approaching`` / ``receding``: the object grows from small to 2.6-3 times its size (as if
  coming closer), or shrinks.
* ``appearing`` / ``disappearing``: the object is absent, then present from a random moment in
  the middle third on; or the reverse.

Classes that need MOTION but not its direction:

* ``falling_fast`` / ``falling_slow``: the object moves down by half the frame or by 15% of it.

Classes that need APPEARANCE only (any one frame tells them apart; nothing moves):

* ``static_bar`` / ``static_disc``: a bar at a random angle or a disc, larger than the moving
  objects. Their outlines differ at the scale of a whole object: from 30 videos a class with
  random colours, small models do not learn the finer square/disc/triangle distinction.

Frames are 12 fps, yuv420p, and every file and list is written atomically (lists last), so a
folder with ``train.csv`` is complete. Everything is a function of ``seed``: the same seed gives
the same decoded frames and the same lists. Layout of ``OUT``: ``videos/<class>/<class>_NNNN.mp4``,
``classes.txt`` (one name a line), ``train.csv`` and ``val.csv`` (``path,label`` with a header,
paths relative to ``OUT``, labels as class names), a quarter of each class for validation.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import av
import numpy as np

from tubelet.files import atomic_write_text

FPS = 12
SHAPES = ("square", "disc", "triangle")


@dataclass(frozen=True)
class Track:
    """The object over time: arrays of length T (centre ``x``, ``y`` and ``radius`` in pixels,
    ``angle`` in radians, ``opacity`` in [0, 1]) and its ``shape``."""

    shape: str
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    opacity: np.ndarray


def _track(shape: str, frames: int, x, y, radius, angle=0.0, opacity=1.0) -> Track:
    """A :class:`Track` with every scalar broadcast to ``frames`` values."""
    full = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float64), (frames,))  # noqa: E731
    return Track(shape, full(x), full(y), full(radius), full(angle), full(opacity))


def _radius(draw: np.random.Generator, size: int) -> float:
    return draw.uniform(0.11, 0.16) * size


def _moving_right(draw: np.random.Generator, u: np.ndarray, size: int) -> Track:
    radius, span = _radius(draw, size), draw.uniform(0.5, 0.6) * size
    x0 = draw.uniform(radius + 1, size - radius - 1 - span)  # starts in the left part, ends in the right
    y = draw.uniform(radius + 1, size - radius - 1)
    return _track(SHAPES[draw.integers(3)], len(u), x0 + span * u, y, radius, draw.uniform(0, 2 * math.pi))


def _falling(fraction: float) -> Callable[[np.random.Generator, np.ndarray, int], Track]:
    def scene(draw: np.random.Generator, u: np.ndarray, size: int) -> Track:
        radius, span = _radius(draw, size), fraction * size
        x = draw.uniform(radius + 1, size - radius - 1)
        y0 = draw.uniform(radius + 1, size - radius - 1 - span)
        return _track(SHAPES[draw.integers(3)], len(u), x, y0 + span * u, radius, draw.uniform(0, 2 * math.pi))

    return scene


def _rotating_clockwise(draw: np.random.Generator, u: np.ndarray, size: int) -> Track:
    length = draw.uniform(0.25, 0.32) * size  # the hand's length
    x, y = (draw.uniform(length + 1, size - length - 1) for _ in range(2))
    # from about 12 o'clock (angle -90 degrees, y points down) a half to three-quarter turn
    start, turn = math.radians(draw.uniform(-120, -60)), math.radians(draw.uniform(180, 270))
    return _track("hand", len(u), x, y, length, start + turn * u)  # angle grows: clockwise with y down


def _approaching(draw: np.random.Generator, u: np.ndarray, size: int) -> Track:
    radius, growth = draw.uniform(0.05, 0.065) * size, draw.uniform(2.6, 3.0)
    largest = radius * growth
    x, y = (draw.uniform(largest + 1, size - largest - 1) for _ in range(2))
    return _track(SHAPES[draw.integers(3)], len(u), x, y, radius * growth**u, draw.uniform(0, 2 * math.pi))


def _appearing(draw: np.random.Generator, u: np.ndarray, size: int) -> Track:
    radius = _radius(draw, size)
    x, y = (draw.uniform(radius + 1, size - radius - 1) for _ in range(2))
    onset = draw.uniform(1 / 3, 2 / 3)
    return _track(SHAPES[draw.integers(3)], len(u), x, y, radius, draw.uniform(0, 2 * math.pi), (u >= onset).astype(np.float64))


def _static(shape: str, low: float, high: float) -> Callable[[np.random.Generator, np.ndarray, int], Track]:
    def scene(draw: np.random.Generator, u: np.ndarray, size: int) -> Track:
        radius = draw.uniform(low, high) * size
        x, y = (draw.uniform(radius + 1, size - radius - 1) for _ in range(2))
        return _track(shape, len(u), x, y, radius, draw.uniform(0, 2 * math.pi))

    return scene


# class name -> (scene that draws the clip, whether the clip is played backwards)
_CLASSES: dict[str, tuple[Callable[[np.random.Generator, np.ndarray, int], Track], bool]] = {
    "moving_right": (_moving_right, False),
    "moving_left": (_moving_right, True),
    "rotating_clockwise": (_rotating_clockwise, False),
    "rotating_anticlockwise": (_rotating_clockwise, True),
    "approaching": (_approaching, False),
    "receding": (_approaching, True),
    "appearing": (_appearing, False),
    "disappearing": (_appearing, True),
    "falling_fast": (_falling(0.5), False),
    "falling_slow": (_falling(0.15), False),
    "static_bar": (_static("bar", 0.2, 0.26), False),
    "static_disc": (_static("disc", 0.16, 0.2), False),
}

CLASS_NAMES: tuple[str, ...] = tuple(_CLASSES)


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, radius: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) from offsets ``(dx, dy)`` ``[T, H, W]`` to a shape
    centred at 0 with ``radius`` and ``angle`` ``[T, 1, 1]``.

    Square, disc and triangle of one ``radius`` have the same area; ``bar`` runs ``radius`` both
    ways from the centre along ``angle``; ``hand`` is a bar of length ``radius`` from the centre
    towards ``angle`` with a hub at the centre.
    """
    cos, sin = np.cos(angle), np.sin(angle)
    along, across = cos * dx + sin * dy, -sin * dx + cos * dy  # coordinates in the shape's frame
    if shape == "disc":
        return np.hypot(dx, dy) - radius
    if shape == "square":
        return np.maximum(np.abs(along), np.abs(across)) - radius * math.sqrt(math.pi) / 2
    if shape == "triangle":
        inradius = radius * math.sqrt(math.pi / (3 * math.sqrt(3)))
        sides = [np.cos(angle + a) * dx + np.sin(angle + a) * dy for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        return np.maximum.reduce(sides) - inradius
    if shape == "bar":
        return np.hypot(along - np.clip(along, -radius, radius), across) - np.maximum(radius * 0.22, 1.5)
    width = np.maximum(radius * 0.15, 1.5)  # hand: a capsule from the centre, plus a hub
    bar = np.hypot(along - np.clip(along, 0.0, radius), across) - width
    return np.minimum(bar, np.hypot(dx, dy) - 2 * width)


def _background(draw: np.random.Generator, size: int) -> np.ndarray:
    """float ``[H, W, 3]``: a gradient between two dull colours, fixed noise and a thin line."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    direction = draw.uniform(0, 2 * math.pi)
    ramp = (math.cos(direction) * (xs - size / 2) + math.sin(direction) * (ys - size / 2)) / size + 0.5
    ramp = np.clip(ramp, 0, 1)[..., None]
    low, high = draw.uniform(10, 110, 3), draw.uniform(10, 110, 3)
    image = low + (high - low) * ramp + draw.uniform(-6, 6, (size, size, 3))
    normal = draw.uniform(0, math.pi)
    offset = draw.uniform(-0.35, 0.35) * size
    distance = math.cos(normal) * (xs - size / 2) + math.sin(normal) * (ys - size / 2) - offset
    line = np.clip(1.0 - np.abs(distance), 0, 1)[..., None]
    return image + (draw.uniform(60, 160, 3) - image) * line


def _object_colour(draw: np.random.Generator) -> np.ndarray:
    colour = draw.uniform(40, 255, 3)
    colour[draw.integers(3)] = 255.0  # bright: one channel at full scale
    return colour


def render_clip(class_name: str, draw: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` of one video of ``class_name``, drawn from ``draw``.

    Two classes of a pair (e.g. ``moving_right`` and ``moving_left``) given generators in the same
    state give time-reversed clips of each other.
    """
    if class_name not in _CLASSES:
        raise ValueError(f"unknown synthetic class {class_name!r}; expected one of {', '.join(CLASS_NAMES)}")
    scene, backwards = _CLASSES[class_name]
    background = _background(draw, size)
    colour = _object_colour(draw)
    track = scene(draw, np.linspace(0.0, 1.0, frames), size)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    per_frame = lambda v: v.reshape(frames, 1, 1)  # noqa: E731  [T] -> [T, 1, 1]
    dx, dy = xs - per_frame(track.x), ys - per_frame(track.y)  # [T, H, W]
    distance = _signed_distance(track.shape, dx, dy, per_frame(track.radius), per_frame(track.angle))
    cover = np.clip(0.5 - distance, 0.0, 1.0)[..., None] * track.opacity.reshape(frames, 1, 1, 1)  # antialiased edge
    clip = np.clip(np.rint(background + (colour - background) * cover), 0, 255).astype(np.uint8)  # [T, H, W, 3]
    return np.ascontiguousarray(clip[::-1]) if backwards else clip


def encode_video(clip: np.ndarray, fps: int = FPS) -> bytes:
    """H.264 (libx264, yuv420p) MP4 bytes of uint8 ``[T, H, W, 3]``; H and W must be even."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = clip.shape[2], clip.shape[1]
        stream.pix_fmt = "yuv420p"
        # One thread, and no macroblock-tree rate control: with it libx264 gave different bytes for
        # the same 32x32 clip in 3% of encodes (30 of 900, PyAV 18.1), without it none of 900.
        stream.options = {"crf": "16", "preset": "veryfast", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        for image in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def _write_replace(path: Path, data: bytes) -> None:
    """Write through a temporary name and rename, so no reader sees a partial file. Unlike
    :func:`atomic_write_bytes` there is no fsync per file (which costs more than encoding the
    video); one ``os.sync`` before the lists are written covers them all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SyntheticDataset:
    """Where :func:`write_synthetic_dataset` put things."""

    root: Path
    train_list: Path
    val_list: Path
    classes_file: Path
    class_names: tuple[str, ...]


def _check(name: str, value: int, minimum: int, even: bool = False) -> None:
    if value < minimum or (even and value % 2):
        need = f"an even number >= {minimum}" if even else f"a number >= {minimum}"
        raise ValueError(f"{name}={value}: expected {need}")


def write_synthetic_dataset(
    out: str | os.PathLike,
    *,
    videos_per_class: int = 40,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
) -> SyntheticDataset:
    """Write the dataset described in the module docstring under ``out`` and return its paths.

    Video ``i`` of class ``k`` is drawn from ``numpy.random.default_rng([seed, k, i])``; the first
    ``max(1, videos_per_class // 4)`` videos of each class go to ``val.csv``, the rest to
    ``train.csv``.
    """
    _check("videos_per_class", videos_per_class, 2)
    _check("frames", frames, 4)
    _check("size", size, 16, even=True)  # yuv420p halves the chroma planes: even sizes only
    root = Path(out)
    num_val = max(1, videos_per_class // 4)
    rows: dict[str, list[str]] = {"train": [], "val": []}
    for k, name in enumerate(CLASS_NAMES):
        for i in range(videos_per_class):
            clip = render_clip(name, np.random.default_rng([seed, k, i]), frames, size)
            relative = f"videos/{name}/{name}_{i:04d}.mp4"
            _write_replace(root / relative, encode_video(clip))
            rows["val" if i < num_val else "train"].append(f"{relative},{name}")
    os.sync()  # the videos reach the disk before the lists that say they are complete
    classes_file = root / "classes.txt"
    atomic_write_text(classes_file, "".join(f"{name}\n" for name in CLASS_NAMES))
    for split in ("val", "train"):  # train.csv last: its presence means the dataset is complete
        atomic_write_text(root / f"{split}.csv", "path,label\n" + "".join(f"{row}\n" for row in rows[split]))
    return SyntheticDataset(root, root / "train.csv", root / "val.csv", classes_file, CLASS_NAMES)
