"""Training-loader throughput: clips/s for 1, 2, ... DataLoader workers on H.264 clips.

Encodes its own videos (default 16 clips, 10 s, 30 fps, 320x240, libx264 CRF 23, keyframe
every 60 frames) with moving textured content, then times ``build_train_loader`` over a
``VideoDataset`` with 8x8 dense sampling (8 frames, one every 8) and ``TrainTransform(224)``
(random resized crop to 224 px, flip, normalise). Prints one line per worker count, plus the
single-process split between decoding and transforming.

    .venv/bin/python benchmarks/data_loader.py --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from tubelet.data.datasets import VideoDataset
from tubelet.data.decode import open_video
from tubelet.data.lists import VideoEntry, VideoList
from tubelet.data.loader import build_train_loader
from tubelet.data.sampling import DenseSampler
from tubelet.data.transforms import TrainTransform


def frame_image(index: int, height: int, width: int, texture: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: a texture panning right with two squares moving across it."""
    image = np.roll(texture, 2 * index, axis=1).copy()
    for k, colour in enumerate([(230, 40, 40), (40, 40, 230)]):
        top = (height // 3) * (k + 1) - 20
        left = (5 * index + 90 * k) % (width - 40)
        image[top : top + 40, left : left + 40] = colour
    return image


def encode(path: Path, *, seconds: float, fps: int, height: int, width: int, gop: int, seed: int) -> None:
    texture = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    texture = (texture // 2 + np.linspace(0, 127, width, dtype=np.uint8)[None, :, None]).astype(np.uint8)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=fps, options={"crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(frame_image(index, height, width, texture), format="rgb24")
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def clips_per_second(dataset: VideoDataset, *, workers: int, batch_size: int, batches: int) -> float:
    loader = build_train_loader(dataset, batch_size=batch_size, num_workers=workers, seed=0)
    iterator = iter(loader)
    next(iterator)  # worker start-up and first batch are not timed
    start = time.perf_counter()
    for _ in range(batches):
        try:
            next(iterator)
        except StopIteration:
            iterator = iter(loader)
            next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def single_process_split(dataset: VideoDataset, clips: int) -> tuple[float, float]:
    """Mean seconds per clip spent decoding and transforming, in this process with 1 thread."""
    decode_s = transform_s = 0.0
    for i in range(clips):
        entry = dataset.video_list[i % len(dataset)]
        generator = torch.Generator().manual_seed(i)
        start = time.perf_counter()
        with open_video(entry.path, threads=1) as video:
            frames = video.frames_at(dataset.sampler.sample(video.info, dataset.num_frames, generator))
        middle = time.perf_counter()
        dataset.transform(frames, entry.label, generator)
        decode_s += middle - start
        transform_s += time.perf_counter() - middle
    return decode_s / clips, transform_s / clips


def cpu_name() -> str:
    """The CPU's model name (Linux) and core count."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--gop", type=int, default=60, help="keyframe interval of the encoded clips")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per worker count")
    parser.add_argument("--dir", type=Path, default=None, help="keep the encoded clips here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        height, width = args.size
        start = time.perf_counter()
        paths = []
        for i in range(args.videos):
            path = folder / f"clip{i:03d}_{height}x{width}_{args.fps}fps_gop{args.gop}.mp4"
            if not path.exists():
                encode(path, seconds=args.seconds, fps=args.fps, height=height, width=width, gop=args.gop, seed=i)
            paths.append(path)
        print(f"encoded {args.videos} clips ({args.seconds:g} s, {args.fps} fps, {width}x{height}) in {time.perf_counter() - start:.1f} s")

        video_list = VideoList(tuple(VideoEntry(p, i % 4) for i, p in enumerate(paths)), ("a", "b", "c", "d"))
        dataset = VideoDataset(video_list, num_frames=8, sampler=DenseSampler(interval=8), transform=TrainTransform(224))
        decode_s, transform_s = single_process_split(dataset, clips=2 * args.videos)
        print(f"device: {cpu_name()}, torch {torch.__version__}, av {av.__version__}")
        print(f"one process, per clip: decode {1000 * decode_s:.1f} ms, transform {1000 * transform_s:.1f} ms "
              f"-> {1 / (decode_s + transform_s):.1f} clips/s")
        for workers in args.workers:
            rate = clips_per_second(dataset, workers=workers, batch_size=args.batch_size, batches=args.batches)
            print(f"workers={workers}: {rate:.1f} clips/s ({rate / workers:.1f} clips/s per worker), 8x8 clips at 224 px")


if __name__ == "__main__":
    main()
