"""Training from video files against training from clips already in GPU memory (issue 12).

TimeSformer-B divided 8x224, bf16 autocast, AdamW, batch 16 on one GPU. The same training step is
timed twice in one process: on one batch kept in GPU memory (the step rate the GPU allows), and on
batches read through tubelet's training loader (``VideoDataset`` + ``build_train_loader``: PyAV
decoding, 8x8 dense sampling, random resized crop to 224, flip, normalise) from H.264 clips that
the script encodes itself as ``benchmarks/data_loader.py`` does (10 s, 30 fps, 320x240, keyframe
every 60 frames), for each worker count asked. The loader alone (no GPU work) is timed too, so the
decoder's bound is stated: clips/s, and clips/s per worker. With ``--frame-cache SHORT_SIDE`` the
clips are also cached (``tubelet.data.frame_cache``, every core; its rate is printed) and the same
rows are timed reading the cache instead of decoding. Each source runs twice: clips normalised in the
workers (float32), and clips handed over uint8 and normalised on the GPU, as ``tubelet train`` does.

    PYTHONPATH=src python3 benchmarks/end_to_end.py [--workers 8 15] [--videos 64] [--steps 20] [--frame-cache 240]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from concurrent.futures import ProcessPoolExecutor
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from data_loader import encode
from tubelet.data.datasets import VideoDataset
from tubelet.data.frame_cache import build_frame_cache
from tubelet.data.lists import VideoEntry, VideoList
from tubelet.data.loader import build_train_loader
from tubelet.data.sampling import DenseSampler
from tubelet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform, normalize
from tubelet.models.registry import create_model

MODEL = "timesformer_divided_base_p16_8x224"
CLASSES = 4


def encode_clips(folder: Path, count: int) -> list[Path]:
    paths = [folder / f"clip{i:03d}.mp4" for i in range(count)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        jobs = [pool.submit(encode, path, seconds=10.0, fps=30, height=240, width=320, gop=60, seed=seed)
                for seed, path in enumerate(paths)]
        for job in jobs:
            job.result()
    return paths


def timed_steps(step, batches, steps: int) -> float:
    """Steps per second over ``steps`` steps after two untimed ones, synchronised at both ends."""
    for _ in range(2):
        step(next(batches))
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(next(batches))
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def item_costs(dataset: VideoDataset, count: int) -> tuple[float, float]:
    """Milliseconds per clip in this process, one thread: reading its frames (decoded, or from the
    cache), and the whole item (reading, the training transform, the item's tensors)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for index in range(count):
            with dataset.reader(dataset.video_list[index].path) as video:
                video.frames_at(dataset.sampler.sample(video.info, dataset.num_frames, torch.Generator().manual_seed(index)))
        read = (time.perf_counter() - start) / count * 1e3
        start = time.perf_counter()
        for index in range(count):
            dataset[index]
        return read, (time.perf_counter() - start) / count * 1e3
    finally:
        torch.set_num_threads(threads)


def forever(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 15])
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frame-cache", type=int, metavar="SHORT_SIDE", help="also time training from a frame cache at this short side")
    args = parser.parse_args()
    device = torch.device("cuda")
    model = create_model(MODEL, num_classes=CLASSES).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step(batch):
        video = batch["video"].to(device, non_blocking=True)
        if video.dtype == torch.uint8:  # as tubelet train's step: normalised on the GPU
            video = normalize(video, IMAGENET_MEAN, IMAGENET_STD, channel_dim=-4)
        label = batch["label"].to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(video), label)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    resident = {"video": torch.randn(args.batch, 3, 8, 224, 224, device=device),
                "label": torch.randint(CLASSES, (args.batch,), device=device)}
    in_memory = timed_steps(step, iter(lambda: resident, None), args.steps) * args.batch
    print(f"device: {torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"in GPU memory: {in_memory:.1f} clips/s")
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        paths = encode_clips(Path(scratch), args.videos)
        print(f"encoded {len(paths)} clips in {time.perf_counter() - start:.1f} s")
        video_list = VideoList(tuple(VideoEntry(p, i % CLASSES) for i, p in enumerate(paths)), tuple("abcd"))
        sources = {"files": None}  # source -> frame cache; each also with clips handed over uint8
        if args.frame_cache:
            cache = Path(scratch) / "cache"
            start = time.perf_counter()
            results = build_frame_cache(paths, cache, short_side=args.frame_cache, workers=os.cpu_count() or 1)
            seconds = time.perf_counter() - start
            assert all(r.status == "written" for r in results), results
            print(f"cached {len(paths)} clips at short side {args.frame_cache} in {seconds:.1f} s "
                  f"({len(paths) / seconds:.2f} videos/s on {os.cpu_count()} cores)")
            sources["frame cache"] = cache
        print("| source | workers | loader alone clips/s | per worker | training clips/s | / in memory |")
        print("| --- | --- | --- | --- | --- | --- |")
        for (name, cache), dtype in itertools.product(sources.items(), (torch.float32, torch.uint8)):
            source = f"{name}, {'uint8' if dtype == torch.uint8 else 'float'} clips"
            dataset = VideoDataset(video_list, num_frames=8, sampler=DenseSampler(interval=8),
                                   transform=TrainTransform(224, output_dtype=dtype), frame_cache=cache)
            read_ms, item_ms = item_costs(dataset, min(32, len(paths)))
            print(f"| {source} | one process, 1 thread: read {read_ms:.1f} ms + transform {item_ms - read_ms:.1f} ms a clip | "
                  f"{1e3 / item_ms:.1f} | | | |")
            for workers in args.workers:
                loader = build_train_loader(dataset, batch_size=args.batch, num_workers=workers, seed=0)
                batches = forever(loader)
                next(batches)
                start = time.perf_counter()
                for _ in range(args.steps):
                    next(batches)
                alone = args.steps * args.batch / (time.perf_counter() - start)
                trained = timed_steps(step, batches, args.steps) * args.batch
                print(f"| {source} | {workers} | {alone:.1f} | {alone / workers:.2f} | {trained:.1f} | {trained / in_memory:.2f} |",
                      flush=True)
                del loader, batches


if __name__ == "__main__":
    main()
