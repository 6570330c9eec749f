"""Training from video files against training from clips already in GPU memory (issue 12).

TimeSformer-B divided 8x224, bf16 autocast, AdamW, batch 16 on one GPU. tubelet train's own loop
(``engine.train.train_one_epoch``, which reads each step's loss) is timed in one process on one
batch kept in GPU memory (the step rate the GPU allows), and on batches read through tubelet's
training stream (``VideoDataset`` + ``build_train_stream``: PyAV decoding, 8x8 dense sampling,
random resized crop to 224, flip, normalise) from H.264 clips that the script encodes itself as
``benchmarks/data_loader.py`` does (10 s, 30 fps, 320x240, keyframe every 60 frames), for each
worker count asked. The loader alone (no GPU work) is timed too, so the decoder's bound is stated:
clips/s, and clips/s per worker.

Sources: the files, and a frame cache built from them (``tubelet.data.frame_cache``, every core;
its rate is printed); each with clips normalised in the workers (float32) and handed over uint8 and
normalised on the GPU, as ``tubelet train`` does. The list names the clips over and over, an epoch
of ``--epoch-clips`` samples; ``--loaders epochs`` also times a new loader iterator each epoch
(``build_train_loader``, as tubelet train did before its stream), which short epochs make pay for
workers that start each epoch empty.

    PYTHONPATH=src python3 benchmarks/end_to_end.py [--workers 8 15] [--videos 64] [--steps 20] [--frame-cache 240]
        [--sources files cache] [--handover float uint8] [--epoch-clips 4096] [--loaders stream epochs]
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
from tubelet.data.failures import FailureTracker
from tubelet.data.frame_cache import build_frame_cache
from tubelet.data.lists import VideoEntry, VideoList
from tubelet.data.loader import build_train_loader, build_train_stream
from tubelet.data.sampling import DenseSampler
from tubelet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform
from tubelet.engine.checkpoint import Progress
from tubelet.engine.config import TrainConfig
from tubelet.engine.optim import build_optimizer
from tubelet.engine.schedule import build_scheduler
from tubelet.engine.train import TrainState, train_one_epoch
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


def timed_loop(state: TrainState, batches, steps: int) -> float:
    """Clips per second of tubelet train's loop over ``steps`` steps of ``batches`` (an iterator),
    after two untimed ones, synchronised at both ends."""
    def run(count: int) -> int:
        state.progress.step_in_epoch = 0
        return sum(stats["clips"] for stats in train_one_epoch(
            state, batches, steps=count, accum_steps=1, device=torch.device("cuda"), amp_dtype=torch.bfloat16,
            clip_grad=None, loss_fn=F.cross_entropy, mixup=None, seed=0, rank=0, failures=FailureTracker(),
            normalisation=(IMAGENET_MEAN, IMAGENET_STD)))

    run(2)
    torch.cuda.synchronize()
    start = time.perf_counter()
    clips = run(steps)
    torch.cuda.synchronize()
    return clips / (time.perf_counter() - start)


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
    """A new pass over ``loader`` each epoch, without end."""
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 15])
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frame-cache", type=int, metavar="SHORT_SIDE", default=240,
                        help="the frame cache's short side (the clips are 320x240)")
    parser.add_argument("--sources", nargs="+", choices=("files", "cache"), default=["files", "cache"],
                        help="decode the files, read a frame cache built from them, or both")
    parser.add_argument("--handover", nargs="+", choices=("float", "uint8"), default=["float", "uint8"],
                        help="clips normalised in the workers (float), or on the GPU (uint8)")
    parser.add_argument("--epoch-clips", type=int, nargs="+", default=[4096], help="samples an epoch")
    parser.add_argument("--loaders", nargs="+", choices=("stream", "epochs"), default=["stream"],
                        help="one iterator for every epoch (tubelet train), or a new one each epoch")
    args = parser.parse_args()
    model = create_model(MODEL, num_classes=CLASSES).cuda()
    optimizer = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-4, weight_decay=0.05))
    scheduler = build_scheduler(optimizer, total_steps=10**6, warmup_steps=0, min_factor=1.0)
    state = TrainState(model, model, optimizer, scheduler, torch.amp.GradScaler(enabled=False), None, Progress())
    resident = {"video": torch.randint(256, (args.batch, 3, 8, 224, 224), dtype=torch.uint8, device="cuda"),
                "label": torch.randint(CLASSES, (args.batch,), device="cuda"), "index": torch.arange(args.batch),
                "failed": []}
    in_memory = timed_loop(state, itertools.repeat(resident), args.steps)
    print(f"device: {torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"in GPU memory: {in_memory:.1f} clips/s")
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        paths = encode_clips(Path(scratch), args.videos)
        print(f"encoded {len(paths)} clips in {time.perf_counter() - start:.1f} s")
        sources = {"files": None} if "files" in args.sources else {}  # source -> frame cache
        if "cache" in args.sources:
            cache = Path(scratch) / "cache"
            start = time.perf_counter()
            results = build_frame_cache(paths, cache, short_side=args.frame_cache, workers=os.cpu_count() or 1)
            seconds = time.perf_counter() - start
            assert all(r.status == "written" for r in results), results
            print(f"cached {len(paths)} clips at short side {args.frame_cache} in {seconds:.1f} s "
                  f"({len(paths) / seconds:.2f} videos/s on {os.cpu_count()} cores)")
            sources["frame cache"] = cache
        print("| source | epoch clips | loader | workers | loader alone clips/s | per worker | training clips/s | / in memory |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for (name, cache), dtype, epoch_clips in itertools.product(sources.items(), args.handover, args.epoch_clips):
            source = f"{name}, {dtype} clips"
            video_list = VideoList(tuple(VideoEntry(paths[i % len(paths)], i % CLASSES) for i in range(epoch_clips)),
                                   tuple("abcd"))
            dataset = VideoDataset(video_list, num_frames=8, sampler=DenseSampler(interval=8),
                                   transform=TrainTransform(224, output_dtype=getattr(torch, dtype)), frame_cache=cache)
            read_ms, item_ms = item_costs(dataset, min(32, len(paths)))
            print(f"| {source} | one process, 1 thread: read {read_ms:.1f} ms + transform {item_ms - read_ms:.1f} ms a clip | "
                  f"| | {1e3 / item_ms:.1f} | | | |")
            for loader_kind, workers in itertools.product(args.loaders, args.workers):
                if loader_kind == "stream":
                    loader = build_train_stream(dataset, batch_size=args.batch, num_workers=workers, seed=0)
                    batches = iter(loader)
                else:
                    loader = build_train_loader(dataset, batch_size=args.batch, num_workers=workers, seed=0)
                    batches = forever(loader)
                next(batches)
                start = time.perf_counter()
                for _ in range(args.steps):
                    next(batches)
                alone = args.steps * args.batch / (time.perf_counter() - start)
                trained = timed_loop(state, batches, args.steps)
                print(f"| {source} | {epoch_clips} | {loader_kind} | {workers} | {alone:.1f} | {alone / workers:.2f} | {trained:.1f} | {trained / in_memory:.2f} |",
                      flush=True)
                del loader, batches


if __name__ == "__main__":
    main()
