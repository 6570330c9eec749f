"""MViTv2-S on one GPU: tubelet against torchvision's ``mvit_v2_s``, side by side in one process.

Both run the same random weights (torchvision's model, converted), 16 x 224 clips, bf16 autocast,
``torch.inference_mode``, batch 1 and 32, eager and under ``torch.compile``; before timing,
``tubelet.bench`` checks that the float32 logits agree. tubelet is measured with both ways of
adding the relative-position term (``tubelet.attention.pooling.RELATIVE_POSITIONS``): folded into
``q . k`` (one fused attention kernel, the default on CUDA) and as an additive bias. The table
gives videos/s and the ratio to torchvision in the same compile mode; ``--out`` also writes every
timing as JSON and, with ``--profile``, the 15 longest CUDA kernels of each side at the largest
batch (eager), which says where the time goes.

    python benchmarks/mvit_vs_torchvision.py [--batch 1 32] [--reps 20] [--compile default] [--norm-backend auto|torch|triton]
        [--out DIR] [--profile]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import tubelet.attention.pooling as pooling
from tubelet.bench import BenchConfig, markdown, run_bench
from tubelet.bench.reference import build_reference
from tubelet.files import atomic_write_text
from tubelet.layers.norm import LAYER_NORM_BACKEND

MODEL = "mvitv2_small_16x224"
PATHS = ("folded", "bias")


def measure(batches: tuple[int, ...], reps: int, compile_modes: list[str | None], norm_backend: str | None = None,
            graphs: bool = False) -> list[dict]:
    """One ``run_bench`` per (compile mode, relative-position path); rows tagged with both.
    ``norm_backend`` is tubelet's LayerNorm backend (``tubelet.layers.norm``), torchvision's is its
    own. ``graphs``: one more run of tubelet alone from CUDA graphs (CUDA's default path)."""
    results = []
    if graphs:
        config = BenchConfig(models=(MODEL,), batches=batches, dtype="bf16", device="cuda", reps=reps, warmup=5,
                             cuda_graph=True, norm_backend=norm_backend)
        result = run_bench(config, log=print)
        for row in result["rows"]:
            row["positions"] = "folded"
        results.append(result)
    for compile_mode in compile_modes:
        for path in PATHS:
            pooling.RELATIVE_POSITIONS = path
            config = BenchConfig(models=(MODEL,), batches=batches, compare=True, dtype="bf16", device="cuda",
                                 reps=reps, warmup=5, compile=compile_mode, norm_backend=norm_backend)
            result = run_bench(config, log=print)
            for row in result["rows"]:
                row["positions"] = path if row["implementation"] == "tubelet" else "-"
            results.append(result)
    pooling.RELATIVE_POSITIONS = "auto"
    return results


def side_by_side(results: list[dict], batches: tuple[int, ...]) -> str:
    """videos/s per (implementation, relative positions, compile mode) and batch, with the ratio
    to torchvision in the same compile mode (torchvision is measured once per tubelet path: the
    better of its two measurements is kept)."""
    ours, theirs, library = {}, {}, "torchvision"
    for result in results:
        for row in result["rows"]:
            if row["status"] != "ok":
                continue
            mode = "CUDA graph" if row["cuda_graph"] else row["compile"] or "eager"
            if row["implementation"] == "tubelet":
                ours.setdefault((mode, row["positions"]), {})[row["batch"]] = row["videos_per_s"]
            else:
                library = row["implementation"]
                best = theirs.setdefault(mode, {})
                best[row["batch"]] = max(best.get(row["batch"], 0.0), row["videos_per_s"])
    header = ["implementation", "compile"] + [f"batch {b} videos/s" for b in batches] + [f"batch {b} / torchvision" for b in batches]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for mode in sorted(theirs.keys() | {m for m, _ in ours}, key=lambda m: m != "eager"):
        graphed = mode == "CUDA graph"  # tubelet alone, against torchvision eager
        reference = theirs.get("eager" if graphed else mode, {})
        rows = ([] if graphed else [(library, reference)]) + [(f"tubelet ({path} positions)", ours[(mode, path)]) for path in PATHS if (mode, path) in ours]
        for name, cells in rows:
            speeds = [f"{cells[b]:.1f}" if b in cells else "-" for b in batches]
            ratios = [f"{cells[b] / reference[b]:.2f}x" if b in cells and b in reference else "-" for b in batches]
            lines.append("| " + " | ".join([name, mode] + speeds + ratios) + " |")
    return "\n".join(lines) + "\n"


def profile(batch: int) -> str:
    """The 15 CUDA kernels with the most time for one eager bf16 forward of each side."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    reference = build_reference(MODEL, {}, torch.device("cuda"))
    video = torch.randn(batch, 3, 16, 224, 224, device="cuda")
    tables = []
    for name, model in (("tubelet", reference.tubelet), (reference.library, reference.module)):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(3):
                model(video)
            torch.cuda.synchronize()
            with profiler(activities=[ProfilerActivity.CUDA]) as prof:
                model(video)
                torch.cuda.synchronize()
        tables.append(f"### {name}, batch {batch}\n\n```\n{prof.key_averages().table(sort_by='cuda_time_total', row_limit=15)}\n```\n")
    return "\n".join(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--compile", default="default", help="torch.compile mode for the compiled rows; 'none' skips them")
    parser.add_argument("--norm-backend", choices=LAYER_NORM_BACKEND.names, help="tubelet's LayerNorm backend (default: the switch's)")
    parser.add_argument("--graphs", action="store_true", help="also tubelet from CUDA graphs, against torchvision eager")
    parser.add_argument("--out", type=Path, help="folder for mvit_vs_torchvision.{md,json}")
    parser.add_argument("--profile", action="store_true", help="also profile one eager forward of each at the largest batch")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (and torchvision)")
    batches = tuple(args.batch)
    # The logit check before timing runs in float32: without TF32 both sides compute it exactly.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = measure(batches, args.reps, [None] + ([] if args.compile == "none" else [args.compile]), args.norm_backend, args.graphs)
    report = [f"## {MODEL} vs torchvision mvit_v2_s\n", side_by_side(results, batches)]
    report += [markdown(result) for result in results]
    if args.profile:
        report.append(profile(max(batches)))
    text = "\n".join(report)
    print(text)
    if args.out:
        atomic_write_text(args.out / "mvit_vs_torchvision.md", text)
        atomic_write_text(args.out / "mvit_vs_torchvision.json", json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
