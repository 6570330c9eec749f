"""Where one model's GPU time goes: one forward (or training step) of a registered model under
``torch.profiler``, bf16 autocast, after warm-up; prints the CUDA kernels with the most GPU time,
the number of kernel launches, and CPU against GPU time. The profiles quoted in
``benchmarks/NOTES.md`` come from this script.

    PYTHONPATH=src python3 benchmarks/profile_model.py MODEL [--frames T] [--size S] [--batch B]
        [--mode infer|train] [--linear-backend torch|triton] [--norm-backend auto|torch|triton] [--layout permute|view] [--top 20]
        [key=value ...]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from tubelet.attention.layout import ATTENTION_LAYOUT
from tubelet.bench.run import linear_backend, parse_overrides
from tubelet.bench.timing import synchronize
from tubelet.layers.norm import LAYER_NORM_BACKEND
from tubelet.models.registry import create_model
from tubelet.models.summary import default_input_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("overrides", nargs="*", help="model constructor overrides, key=value")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--linear-backend", default="torch")
    parser.add_argument("--layout", default=ATTENTION_LAYOUT.get(), help="attention layout: permute or view")
    parser.add_argument("--norm-backend", choices=LAYER_NORM_BACKEND.names, default=LAYER_NORM_BACKEND.get())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cuda")
    channels, frames, height, width = default_input_size(args.model)
    frames, height = args.frames or frames, args.size or height
    width = args.size or width
    options = parse_overrides(args.overrides)
    with torch.device(device):
        model = create_model(args.model, num_frames=frames, img_size=height, **options)
        video = torch.randn(args.batch, channels, frames, height, width)
    model.train(args.mode == "train")

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(video)
        if args.mode == "train":
            out.float().sum().backward()

    grad = torch.enable_grad() if args.mode == "train" else torch.inference_mode()
    with linear_backend(args.linear_backend), LAYER_NORM_BACKEND.using(args.norm_backend), ATTENTION_LAYOUT.using(args.layout), grad:
        for _ in range(args.warmup):
            step()
        synchronize(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            step()
            cpu_ms = (time.perf_counter() - start) * 1e3
            synchronize(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_ms = sum(e.device_time for e in kernels) / 1e3
    print(f"{args.model} {frames}x{height} batch {args.batch} {args.mode} ({args.linear_backend} linear backend, "
          f"{args.norm_backend} LayerNorm, {args.layout} layout): {len(kernels)} kernel launches, CPU {cpu_ms:.1f} ms, "
          f"GPU kernels {gpu_ms:.1f} ms")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top, max_name_column_width=90))


if __name__ == "__main__":
    main()
