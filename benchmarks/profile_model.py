"""Where one model's GPU time goes: one forward (or training step) of a registered model under
``torch.profiler``, bf16 autocast, after warm-up; prints the CUDA kernels with the most GPU time,
the number of kernel launches, and CPU against GPU time (``--sort cpu``: the operators by the
host's time in them, where a launch-bound forward waits). The profiles quoted in
``benchmarks/NOTES.md`` come from this script.

    PYTHONPATH=src python3 benchmarks/profile_model.py MODEL [--frames T] [--size S] [--batch B]
        [--mode infer|train] [--linear-backend torch|triton] [--norm-backend auto|torch|triton] [--layout auto|permute|view] [--top 20] [--shapes] [--sort gpu|cpu]
        [key=value ...]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from tubelet.attention.layout import ATTENTION_LAYOUT
from model_input import add_model_arguments, model_and_video
from tubelet.bench.run import linear_backend
from tubelet.bench.timing import synchronize
from tubelet.layers.norm import LAYER_NORM_BACKEND


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--linear-backend", default="torch")
    parser.add_argument("--layout", choices=ATTENTION_LAYOUT.names, default=ATTENTION_LAYOUT.get(), help="attention layout")
    parser.add_argument("--norm-backend", choices=LAYER_NORM_BACKEND.names, default=LAYER_NORM_BACKEND.get())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--shapes", action="store_true", help="one row per operator and input shapes (where the copies come from)")
    parser.add_argument("--sort", choices=("gpu", "cpu"), default="gpu",
                        help="rows by their GPU time, or by the host's time in each op (where a launch-bound forward waits)")
    args = parser.parse_args()
    device = torch.device("cuda")
    model, video = model_and_video(args, device)
    frames, height = video.shape[2], video.shape[3]
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
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=args.shapes) as prof:
            start = time.perf_counter()
            step()
            cpu_ms = (time.perf_counter() - start) * 1e3
            synchronize(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_ms = sum(e.device_time for e in kernels) / 1e3
    print(f"{args.model} {frames}x{height} batch {args.batch} {args.mode} ({args.linear_backend} linear backend, "
          f"{args.norm_backend} LayerNorm, {args.layout} layout): {len(kernels)} kernel launches, CPU {cpu_ms:.1f} ms, "
          f"GPU kernels {gpu_ms:.1f} ms")
    table = prof.key_averages(group_by_input_shape=args.shapes).table(
        sort_by="self_cuda_time_total" if args.sort == "gpu" else "self_cpu_time_total", row_limit=args.top, max_name_column_width=90, max_shapes_column_width=120)
    print(table)


if __name__ == "__main__":
    main()
