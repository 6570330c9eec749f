"""Peak forward memory on CPU against the number of frames: linear attention (LVT) vs softmax
joint attention of the same width.

Every model is ``lvt_tiny_p8_8x32``'s backbone (embedding 64, 2 layers, 4 heads, patch 8) at
``--size`` pixels, so only the attention scheme differs:
- ``lvt factorised``: the seed's default linear attention (space then time, fixation, shifts);
- ``lvt joint``: linear attention over all tokens at once;
- ``softmax joint``: ``attention="joint"`` through ``F.scaled_dot_product_attention`` as it runs
  by default (on CPU PyTorch picks a fused, memory-efficient kernel);
- ``softmax joint (math)``: the same with the math backend, which forms the ``N x N`` matrix.

Each measurement runs in a fresh Python process: build the model, allocate the input, read the
peak resident set size (``ru_maxrss``) after a warm-up pass on one frame, run one forward pass
(batch 1, ``torch.no_grad``, one thread) and report how far the peak rose above that level.

    .venv/bin/python benchmarks/lvt_memory.py [--frames 8 16 32 64] [--size 64]

Prints two markdown tables: the peak rise in MiB, and the GMACs of the same passes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from tubelet.models.summary import model_cost

MODELS = {
    "lvt factorised": dict(),
    "lvt joint": dict(attention_options={"groupings": ("joint",)}),
    "softmax joint": dict(attention="joint", attention_options=None),
    "softmax joint (math)": dict(attention="joint", attention_options=None),
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(model_name: str, frames: int, size: int) -> dict:
    """One forward pass in this process; the rise of the peak RSS in MiB."""
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import tubelet

    torch.set_num_threads(1)
    model = tubelet.create_model("lvt_tiny_p8_8x32", num_classes=10, num_frames=frames, img_size=size, **MODELS[model_name]).eval()
    video = torch.randn(1, 3, frames, size, size)
    backend = sdpa_kernel(SDPBackend.MATH) if model_name.endswith("(math)") else contextlib.nullcontext()
    with torch.no_grad(), backend:
        model(video[:, :, :1])  # warm-up on one frame: one-off allocations of the first call
        before = _peak_mib()
        model(video)
    return {"model": model_name, "frames": frames, "tokens": frames * (size // 8) ** 2, "peak_rise_mib": _peak_mib() - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]), args.size)))
        return
    rows = {}
    for name in MODELS:
        for frames in args.frames:
            command = [sys.executable, __file__, "--size", str(args.size), "--measure", name, str(frames)]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            rows.setdefault(name, []).append(result)
            print(f"{name:<22} {frames:>3} frames {result['tokens']:>6} tokens  +{result['peak_rise_mib']:8.1f} MiB", file=sys.stderr)
    tokens = [r["tokens"] for r in next(iter(rows.values()))]
    print("| model | " + " | ".join(f"{f} frames ({n} tokens)" for f, n in zip(args.frames, tokens)) + " |")
    print("| --- |" + " --- |" * len(args.frames))
    for name, results in rows.items():
        print(f"| {name} | " + " | ".join(f"{r['peak_rise_mib']:.1f}" for r in results) + " |")
    print("\nGMACs of the same forward passes (`tubelet.models.summary.model_cost`):\n")
    print("| model | " + " | ".join(f"{f} frames" for f in args.frames) + " |")
    print("| --- |" + " --- |" * len(args.frames))
    for name in ("lvt factorised", "lvt joint", "softmax joint"):
        costs = [model_cost("lvt_tiny_p8_8x32", num_frames=f, img_size=args.size, **MODELS[name]).gmacs for f in args.frames]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in costs) + " |")


if __name__ == "__main__":
    main()
