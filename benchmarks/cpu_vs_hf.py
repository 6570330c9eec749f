"""CPU forward latency: tubelet vs Hugging Face on the same weights.

Each Hugging Face model is built from a reduced but realistic config (random weights), written
with ``save_pretrained`` and converted with ``tubelet.convert.hf.load_hf_model``, so both sides
compute the same function (the logits are checked). Forward passes run under
``torch.inference_mode`` in float32, interleaved (the order alternates each repetition) after a
warm-up; the table gives the median milliseconds and tubelet / Hugging Face.

    .venv/bin/python benchmarks/cpu_vs_hf.py [--reps 15] [--batch 2] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import (
    TimesformerConfig,
    TimesformerForVideoClassification,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    VivitConfig,
    VivitForVideoClassification,
)

from tubelet.convert.hf import load_hf_model

SMALL = dict(hidden_size=384, num_hidden_layers=4, num_attention_heads=6, intermediate_size=1536, image_size=112, num_labels=400)
CONFIGS = {
    "TimeSformer divided 8x112": (TimesformerForVideoClassification, TimesformerConfig(**SMALL, num_frames=8, patch_size=16)),
    "TimeSformer joint 8x112": (TimesformerForVideoClassification, TimesformerConfig(**SMALL, num_frames=8, patch_size=16, attention_type="joint_space_time")),
    "TimeSformer space 8x112": (TimesformerForVideoClassification, TimesformerConfig(**SMALL, num_frames=8, patch_size=16, attention_type="space_only")),
    "ViViT joint 16x112 t2": (VivitForVideoClassification, VivitConfig(**SMALL, num_frames=16, tubelet_size=[2, 16, 16])),
    "VideoMAE 16x112 t2": (VideoMAEForVideoClassification, VideoMAEConfig(**SMALL, num_frames=16, tubelet_size=2, patch_size=16)),
}


def milliseconds(fn, video: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(video)
    return (time.perf_counter() - start) * 1e3


def compare(name: str, model_cls, config, batch: int, reps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    reference = model_cls(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        model = load_hf_model(folder).eval()
    size = config.image_size
    video = torch.randn(batch, 3, config.num_frames, size, size)  # [B, C, T, H, W]
    pixels = video.transpose(1, 2).contiguous()  # Hugging Face takes [B, T, C, H, W]

    def hf(_):
        logits = reference(pixel_values=pixels).logits
        return logits.reshape(batch, -1, logits.shape[-1]).mean(1)  # space-only: mean of per-frame logits

    def ours(_):
        return model(video)

    with torch.inference_mode():
        error = (hf(None) - ours(None)).abs().max().item()
        for _ in range(warmup):
            hf(None), ours(None)
        times = {"hf": [], "tubelet": []}
        for rep in range(reps):
            order = (("hf", hf), ("tubelet", ours)) if rep % 2 == 0 else (("tubelet", ours), ("hf", hf))
            for key, fn in order:
                times[key].append(milliseconds(fn, None))
    hf_ms, ours_ms = statistics.median(times["hf"]), statistics.median(times["tubelet"])
    return dict(name=name, hf=hf_ms, tubelet=ours_ms, ratio=ours_ms / hf_ms, error=error, attn=reference.config._attn_implementation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", default="", help="only configurations whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.reps} interleaved repetitions, median")
    print(f"| {'configuration':<28} | {'HF attention':>12} | {'HF ms':>8} | {'tubelet ms':>10} | {'tubelet / HF':>12} | {'max |dlogit|':>12} |")
    print(f"|{'-' * 30}|{'-' * 14}:|{'-' * 9}:|{'-' * 11}:|{'-' * 13}:|{'-' * 13}:|")
    for name, (model_cls, config) in CONFIGS.items():
        if args.only not in name:
            continue
        row = compare(name, model_cls, config, args.batch, args.reps, args.warmup)
        print(f"| {row['name']:<28} | {row['attn']:>12} | {row['hf']:>8.1f} | {row['tubelet']:>10.1f} | {row['ratio']:>12.2f} | {row['error']:>12.1e} |")


if __name__ == "__main__":
    main()
