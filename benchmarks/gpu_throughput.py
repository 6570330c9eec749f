"""Issue 12's GPU table, side by side in one process: tubelet against transformers on the same
weights, the linear video transformer with the PyTorch and the Triton linear attention backends,
and softmax divided attention on the same backbone for comparison; plus a micro-benchmark of the
linear attention kernels against the copy bandwidth measured in the same run.

Every model row is ``tubelet.bench.run_bench`` (CUDA events, warm-up, median of ``--reps``; MFU
against a bf16 8192^3 matmul peak measured in the same run; bf16 autocast). Sections:

- ``kernels``: Eq. 3 of the LVT paper alone, torch vs triton backend, at the LVT base shapes
  (spatial step ``[16 frames, 8 heads, 196, 64]``, temporal step ``[196, 8, 16, 64]``, joint
  ``[1, 8, 3136, 64]``), bf16, forward and forward + backward, with relative errors against a
  float64 reference and the bytes moved over the measured copy bandwidth (the floor);
- ``step``: LVT base's two attention steps whole (LayerNorm to residual), and the official
  architecture's (separate Q and K gates), torch backend (composed) vs triton backend (the fused
  step kernel) in each variant (tf32 or bf16 dot operands, key pass split or not), forward and
  forward + backward at 16x224 batch 1 and 8 and 96x448 batch 1, and the fused kernel alone
  against its byte floor; ``--step-dot-operands`` and ``--step-key-split`` set the variant that
  every other section runs;
- ``sdpa``: softmax attention alone, each kernel of the switch (``tubelet.attention.sdpa``) at the
  sequence lengths the models meet (8, 16 and 32: temporal steps; 197: a 224 px frame with its class
  token; 785: a 448 px frame), bf16, forward and forward + backward, with its relative error
  against float64; then TimeSformer-B 8x224 at batch 32 with each kernel;
- ``gemms``: TimeSformer-B 8x224's matrix products at batch 32 (inference) and 16 (a training
  step's forward, input-gradient and weight-gradient products), each alone, bf16, against the
  8192^3 matmul peak measured in the same run: the rate the model's products can reach at best;
- ``profile``: one LVT base 16x224 forward at batch 1 under ``torch.profiler`` with each backend:
  kernel launches, CPU and GPU time, the operators with GPU time called most often;
- ``short-keys``: ``auto`` with each short-sequence kernel (``sdpa.SHORT_KEY_KERNEL``: tubelet's
  Triton kernel or the memory-efficient one) on TimeSformer-B 8x224 (inference at batch 1 and 32,
  training at 16) and ViViT-B factorised self-attention 32x224 (batch 8);
- ``timesformer``: TimeSformer-B divided 8x224 inference at batch 1 and 32, tubelet vs transformers,
  and tubelet's steps replayed from a CUDA graph (``--cuda-graph``);
- ``train``: its training step (AdamW) at batch 16, tubelet vs transformers;
- ``vivit``, ``videomae``: ViViT-B joint 32x224 at batch 8, VideoMAE-B 16x224 at batch 32;
- ``lvt``: LVT base 16x224 at batch 1 and 8, torch vs triton backend, and TimeSformer-B divided
  (our softmax) 16x224 at batch 1 as in the issue's table; each also from a CUDA graph, which
  takes the launch overhead out (the profile: 46 ms of CPU time for 7.6 ms of GPU work);
- ``lvt-official``: the official LVT architecture (``tubelet.convert.lvt.official_arguments`` with
  separate Q and K gates: what converted official checkpoints run) at 16x224, batch 1 and 8, with
  each backend, beside LVT base with the triton backend;
- ``table8``: the seed's Table 8 grid at batch 1 (16, 32, 64, 96 frames x 224, 448 px, and
  128x448): LVT torch, LVT triton, and softmax divided attention on the same 512-wide backbone
  (``attention=divided``), with the speed-up of each LVT backend over softmax;
- ``table8-triton``: the same grid with the triton backend (the fused step) and softmax only;
- ``table8-graph``: the 16-96 frame grid, triton LVT and softmax each replayed from a CUDA graph
  (eager batch 1 waits on the host's launches; a graph times the GPU's work);
- ``table8-compiled``: the grid's corners (16x224, 96x448), triton LVT and softmax each under
  ``torch.compile`` (one compilation a cell: run it in a call of its own);
- ``norm``: TimeSformer-B 8x224 and MViTv2-S 16x224 (beside torchvision) at batch 1 and 32 with each
  LayerNorm backend (``--norm-backend``);
- ``norm-train``: training steps (AdamW) of TimeSformer-B 8x224 at batch 8 and 16, MViTv2-S 16x224 at
  batch 16 and ViViT-B factorised self-attention 32x224 at batch 4 and 8 with each LayerNorm backend;
- ``norm-launch``: the host's time for one LayerNorm call, forward and forward + backward, with
  each backend on an input too small to keep the GPU busy (what a host-bound step pays a call);
- ``layout``: TimeSformer-B divided 8x224 (inference at batch 1 and 32, training at 16) and ViViT-B
  factorised self-attention 32x224 (batch 8) with each attention layout (``--layout``: ``permute``
  copies or ``view`` s of the tokens, ``tubelet.attention.layout``);
- ``memory``: LVT base training steps at 448 px, 16 -> 128 frames, batch 1 (peak memory against frames);
- ``compiled``: ``torch.compile`` (default mode) rows: TimeSformer-B 8x224 at batch 1 and 32,
  tubelet and transformers, and LVT base 16x224 at batch 1 and 8 with each backend; each
  compilation takes tens of seconds, so run this section in a call of its own;
- ``autotune``: TimeSformer-B 8x224 batch 32 under ``max-autotune`` (minutes of autotuning).

Results go to ``OUT/gpu_throughput.md`` and ``OUT/gpu_throughput.json``, rewritten after every
section, so a run stopped by a time limit keeps what it measured.

    PYTHONPATH=src python3 benchmarks/gpu_throughput.py --out OUT [--sections kernels lvt ...] [--reps 10]
        [--step-dot-operands tf32|bf16] [--step-key-split off|auto] [--step-short-group 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from tubelet.attention import sdpa
from tubelet.bench import BenchConfig, command_line, markdown, run_bench
from tubelet.bench.run import linear_backend
from tubelet.bench.timing import matmul_peak, synchronize, time_repetitions
from tubelet.convert.lvt import official_arguments
from tubelet.files import atomic_write_json, atomic_write_text
from tubelet.kernels.linear_step import STEP_DOT_OPERANDS, STEP_KEY_SPLIT
from tubelet.kernels.short_attention import SHORT_ATTENTION_TILES
from tubelet.kernels.linear_step import triton as step_kernels
from tubelet.kernels.linear_attention.reference import linear_attention_reference

TSF = "timesformer_divided_base_p16_8x224"
LVT = "lvt_base_p16_16x224"
MVIT = "mvitv2_small_16x224"
VIVIT3 = "vivit_factorised_self_base_p16t2_32x224"
SOFTMAX_ON_LVT = {"attention": "divided"}  # the same backbone with TimeSformer's divided softmax attention
# The official LVT architecture with its configs' separate Q and K gates (SSv2's SHIFT_DIV 4), as
# `tubelet convert --from lvt` builds it: 17 x 17 overlapping patches at 224 px
OFFICIAL_LVT = official_arguments(temporal_shift_div=4, fixation_shared=False)
DEVICE = torch.device("cuda")


@dataclass(frozen=True)
class Variant:
    """One labelled ``BenchConfig``; its compare rows are labelled by library with the same suffix."""

    label: str
    config: BenchConfig
    short_key_kernel: str | None = None  # sdpa.SHORT_KEY_KERNEL for the run (None: the default)


def _sections(reps: int, warmup: int) -> dict[str, tuple[list[Variant], list[tuple[str, str]]]]:
    """Section name -> (variants, ratio pairs ``(numerator label, denominator label)`` of videos/s)."""
    run = dict(device="cuda", dtype="bf16", reps=reps, warmup=warmup)
    table8 = dict(frames=(16, 32, 64, 96), sizes=(224, 448), **run)
    return {
        "sdpa-models": ([Variant(f"sdpa {name}", BenchConfig(models=(TSF,), batches=(32,), sdpa_backend=name, **run))
                         for name in ("auto", "flash", "cudnn", "efficient", "math")],
                        [(f"sdpa {name}", "sdpa auto") for name in ("flash", "cudnn", "efficient", "math")]),
        "short-keys": ([
            Variant(f"{kernel} short keys", BenchConfig(models=(TSF,), batches=(1, 32), **run), short_key_kernel=kernel)
            for kernel in ("triton", "efficient")
        ] + [
            Variant(f"{kernel} short keys", BenchConfig(models=(TSF,), batches=(16,), mode="train", **run), short_key_kernel=kernel)
            for kernel in ("triton", "efficient")
        ] + [
            Variant(f"{kernel} short keys", BenchConfig(models=(VIVIT3,), batches=(8,), **run), short_key_kernel=kernel)
            for kernel in ("triton", "efficient")
        ], [("triton short keys", "efficient short keys")]),
        "timesformer": ([Variant("tubelet", BenchConfig(models=(TSF,), batches=(1, 32), compare=True, **run)),
                         Variant("tubelet graph", BenchConfig(models=(TSF,), batches=(1, 32), cuda_graph=True, **run))],
                        [("tubelet", "transformers"), ("tubelet graph", "transformers"), ("tubelet graph", "tubelet")]),
        "train": ([Variant("tubelet", BenchConfig(models=(TSF,), batches=(16,), mode="train", compare=True, **run))],
                  [("tubelet", "transformers")]),
        "vivit": ([Variant("tubelet", BenchConfig(models=("vivit_joint_base_p16t2_32x224",), batches=(8,), compare=True, **run))],
                  [("tubelet", "transformers")]),
        "videomae": ([Variant("tubelet", BenchConfig(models=("videomae_base_p16t2_16x224",), batches=(32,), compare=True, **run))],
                     [("tubelet", "transformers")]),
        "lvt": ([
            Variant("lvt torch", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="torch", **run)),
            Variant("lvt triton", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="triton", **run)),
            Variant("timesformer-b softmax", BenchConfig(models=(TSF,), frames=(16,), **run)),
            Variant("lvt torch graph", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="torch", cuda_graph=True, **run)),
            Variant("lvt triton graph", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="triton", cuda_graph=True, **run)),
            Variant("timesformer-b softmax graph", BenchConfig(models=(TSF,), frames=(16,), cuda_graph=True, **run)),
        ], [("lvt triton", "lvt torch"), ("lvt torch", "timesformer-b softmax"), ("lvt triton", "timesformer-b softmax"),
            ("lvt torch graph", "lvt torch"), ("lvt triton graph", "lvt triton"), ("lvt triton graph", "timesformer-b softmax graph")]),
        "lvt-official": ([
            Variant("lvt official torch", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="torch", overrides=OFFICIAL_LVT, **run)),
            Variant("lvt official triton", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="triton", overrides=OFFICIAL_LVT, **run)),
            Variant("lvt triton", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="triton", **run)),
        ], [("lvt official triton", "lvt official torch"), ("lvt official triton", "lvt triton")]),
        "table8": ([
            Variant("lvt torch", BenchConfig(models=(LVT,), linear_backend="torch", **table8)),
            Variant("lvt triton", BenchConfig(models=(LVT,), linear_backend="triton", **table8)),
            Variant("softmax", BenchConfig(models=(LVT,), overrides=SOFTMAX_ON_LVT, **table8)),
            Variant("lvt torch", BenchConfig(models=(LVT,), frames=(128,), sizes=(448,), linear_backend="torch", **run)),
            Variant("lvt triton", BenchConfig(models=(LVT,), frames=(128,), sizes=(448,), linear_backend="triton", **run)),
            Variant("softmax", BenchConfig(models=(LVT,), frames=(128,), sizes=(448,), overrides=SOFTMAX_ON_LVT, **run)),
        ], [("lvt torch", "softmax"), ("lvt triton", "softmax"), ("lvt triton", "lvt torch")]),
        "table8-triton": ([
            Variant("lvt triton", BenchConfig(models=(LVT,), linear_backend="triton", **table8)),
            Variant("softmax", BenchConfig(models=(LVT,), overrides=SOFTMAX_ON_LVT, **table8)),
            Variant("lvt triton", BenchConfig(models=(LVT,), frames=(128,), sizes=(448,), linear_backend="triton", **run)),
            Variant("softmax", BenchConfig(models=(LVT,), frames=(128,), sizes=(448,), overrides=SOFTMAX_ON_LVT, **run)),
        ], [("lvt triton", "softmax")]),
        "table8-graph": ([  # the grid at batch 1 without the host's launch time (eager batch 1 waits on it)
            Variant("lvt triton graph", BenchConfig(models=(LVT,), linear_backend="triton", cuda_graph=True, **table8)),
            Variant("softmax graph", BenchConfig(models=(LVT,), overrides=SOFTMAX_ON_LVT, cuda_graph=True, **table8)),
        ], [("lvt triton graph", "softmax graph")]),
        "table8-compiled": ([  # the grid's corners under torch.compile (the fused step inside the graph)
            Variant(label, BenchConfig(models=(LVT,), frames=(frames,), sizes=(size,), compile="default", **options, **run))
            for frames, size in ((16, 224), (96, 448))
            for label, options in (("lvt triton compiled", dict(linear_backend="triton")), ("softmax compiled", dict(overrides=SOFTMAX_ON_LVT)))
        ], [("lvt triton compiled", "softmax compiled")]),
        "norm": ([
            Variant("tubelet", BenchConfig(models=(TSF,), batches=(1, 32), **run)),
            Variant("tubelet norm triton", BenchConfig(models=(TSF,), batches=(1, 32), norm_backend="triton", **run)),
            Variant("tubelet mvit", BenchConfig(models=(MVIT,), batches=(1, 32), compare=True, **run)),
            Variant("tubelet mvit norm triton", BenchConfig(models=(MVIT,), batches=(1, 32), norm_backend="triton", **run)),
        ], [("tubelet norm triton", "tubelet"), ("tubelet mvit norm triton", "tubelet mvit"),
            ("tubelet mvit", "torchvision mvit"), ("tubelet mvit norm triton", "torchvision mvit")]),
        "norm-train": ([
            Variant(f"train norm {name}", BenchConfig(models=(model,), batches=batches, mode="train", norm_backend=name, **run))
            for model, batches in ((TSF, (8, 16)), (MVIT, (16,)), (VIVIT3, (4, 8))) for name in ("torch", "triton", "auto")
        ], [("train norm triton", "train norm torch"), ("train norm auto", "train norm torch")]),
        "layout": ([
            Variant(f"layout {name}", BenchConfig(models=(TSF,), batches=(1, 32), layout=name, **run)) for name in ("permute", "view")
        ] + [
            Variant(f"train layout {name}", BenchConfig(models=(TSF,), batches=(16,), mode="train", layout=name, **run)) for name in ("permute", "view")
        ] + [
            Variant(f"vivit-3 layout {name}", BenchConfig(models=(VIVIT3,), batches=(8,), layout=name, **run)) for name in ("permute", "view")
        ], [("layout view", "layout permute"), ("train layout view", "train layout permute"), ("vivit-3 layout view", "vivit-3 layout permute")]),
        "memory": ([
            Variant("lvt torch", BenchConfig(models=(LVT,), frames=(16, 32, 64, 128), sizes=(448,), mode="train", linear_backend="torch", **run)),
            Variant("lvt triton", BenchConfig(models=(LVT,), frames=(16, 32, 64, 128), sizes=(448,), mode="train", linear_backend="triton", **run)),
        ], [("lvt triton", "lvt torch")]),
        "compiled": ([
            Variant("tubelet compiled", BenchConfig(models=(TSF,), batches=(1, 32), compare=True, compile="default", **run)),
            Variant("lvt torch compiled", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="torch", compile="default", **run)),
            Variant("lvt triton compiled", BenchConfig(models=(LVT,), batches=(1, 8), linear_backend="triton", compile="default", **run)),
        ], [("tubelet compiled", "transformers compiled"), ("lvt triton compiled", "lvt torch compiled")]),
        "autotune": ([Variant("tubelet max-autotune", BenchConfig(models=(TSF,), batches=(32,), compile="max-autotune", **run))], []),
    }


def _label(variant: Variant, row: dict) -> str:
    """``tubelet`` rows keep the variant's label; a reference row takes its library's name in its place."""
    if row["implementation"] == "tubelet":
        return variant.label
    return variant.label.replace("tubelet", row["implementation"].split()[0], 1)


def _ratios(rows: list[dict], pairs: list[tuple[str, str]]) -> list[str]:
    """Markdown rows ``numerator / denominator`` of videos/s for every cell both measured."""
    speed = defaultdict(dict)
    for row in rows:
        if row["status"] == "ok":
            speed[(row["frames"], row["size"], row["batch"], row["mode"])][row["label"]] = row["videos_per_s"]
    lines = []
    for numerator, denominator in pairs:
        for (frames, size, batch, mode), values in sorted(speed.items()):
            if numerator in values and denominator in values:
                lines.append(f"| {numerator} / {denominator} | {mode} | {frames}x{size} | {batch} | "
                             f"{values[numerator]:.4g} / {values[denominator]:.4g} | {values[numerator] / values[denominator]:.2f}x |")
    return lines


def _bench_section(name: str, variants: list[Variant], pairs: list[tuple[str, str]]) -> tuple[list[dict], str]:
    rows, parts = [], [f"## {name}", ""]
    for variant in variants:
        print(f"[{name}] {variant.label}: {command_line(variant.config)}", file=sys.stderr, flush=True)
        with sdpa.SHORT_KEY_KERNEL.using(variant.short_key_kernel):
            result = run_bench(variant.config, log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
        for row in result["rows"]:
            row["label"] = _label(variant, row)
            row["section"] = name
        rows += result["rows"]
        parts += [f"### {variant.label}", "", markdown(result, command_line(variant.config))]
    ratios = _ratios(rows, pairs)
    if ratios:
        parts += ["### ratios of videos/s", "", "| ratio | mode | input | batch | videos/s | ratio |", "| --- | --- | --- | --- | --- | --- |", *ratios, ""]
    return rows, "\n".join(parts)


# ----- the kernels alone -----

KERNEL_SHAPES = {
    "LVT base spatial step [16, 8, 196, 64]": (16, 8, 196, 64),
    "LVT base temporal step [196, 8, 16, 64]": (196, 8, 16, 64),
    "joint pattern [1, 8, 3136, 64]": (1, 8, 3136, 64),
    "spatial step at 96x448 [96, 8, 784, 64]": (96, 8, 784, 64),
}


def _copy_bandwidth(reps: int) -> float:
    """Bytes per second of a 1 GiB device-to-device copy, counting bytes read plus bytes written."""
    src = torch.randn(2**28, device=DEVICE)
    dst = torch.empty_like(src)
    seconds = statistics.median(time_repetitions(lambda: dst.copy_(src), DEVICE, warmup=3, reps=reps))
    return 2 * src.numel() * src.element_size() / seconds


def _kernel_section(reps: int, warmup: int) -> tuple[list[dict], str]:
    from tubelet.attention.linear.functional import linear_attention

    device = DEVICE
    bandwidth = _copy_bandwidth(reps)
    lines = [
        "## kernels", "",
        f"Eq. 3 alone, bf16, `[B, H, L, m]` with e = m, median of {reps} after {warmup} (CUDA events). Floor: the bytes of "
        f"q, k, v and the output (forward; backward adds the output gradient and dq, dk, dv, and reads q, k, v "
        f"again) over the copy bandwidth measured here, {bandwidth / 1e12:.3g} TB/s.", "",
        "| shape | backend | forward ms | forward floor ms | forward + backward ms | rel. error out | rel. error grads (max) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = []
    for name, (batch, heads, length, m) in KERNEL_SHAPES.items():
        g = torch.Generator(device=device).manual_seed(length)
        q, k = (torch.rand(batch, heads, length, m, device=device, generator=g) + 0.05 for _ in range(2))
        v = torch.randn(batch, heads, length, m, device=device, generator=g)
        q, k, v = (t.bfloat16().requires_grad_() for t in (q, k, v))
        grad = torch.randn(batch, heads, length, m, device=device, generator=g).bfloat16()
        floor_ms = 4 * q.numel() * 2 / bandwidth * 1e3
        wide = [t.detach().double().requires_grad_() for t in (q, k, v)]
        reference = linear_attention_reference(*wide, 1e-6)
        reference_grads = torch.autograd.grad(reference, wide, grad.double())
        for backend in ("torch", "triton"):
            with linear_backend(backend):
                forward = statistics.median(time_repetitions(lambda: linear_attention(q.detach(), k.detach(), v.detach()), device, warmup=warmup, reps=reps))
                both = statistics.median(time_repetitions(
                    lambda: torch.autograd.grad(linear_attention(q, k, v), (q, k, v), grad), device, warmup=warmup, reps=reps))
                out = linear_attention(q, k, v)
                grads = torch.autograd.grad(out, (q, k, v), grad)

            def error(a, b):
                return ((a.double() - b).norm() / b.norm()).item()

            row = dict(section="kernels", shape=name, backend=backend, forward_ms=forward * 1e3, forward_floor_ms=floor_ms,
                       forward_backward_ms=both * 1e3, error_out=error(out, reference),
                       error_grads=max(error(a, b) for a, b in zip(grads, reference_grads)), copy_bandwidth=bandwidth)
            rows.append(row)
            lines.append(f"| {name} | {backend} | {row['forward_ms']:.4g} | {floor_ms:.3g} | {row['forward_backward_ms']:.4g} | "
                         f"{row['error_out']:.1e} | {row['error_grads']:.1e} |")
        del q, k, v, grad, wide, reference, reference_grads
        torch.cuda.empty_cache()
    return rows, "\n".join(lines) + "\n"


# ----- one linear attention step, composed and fused -----

STEP_SHAPES = {"16x224, batch 1": (1, (16, 14, 14)), "16x224, batch 8": (8, (16, 14, 14)), "96x448, batch 1": (1, (96, 28, 28))}
STEP_MIXERS = {  # LinearAttention options: LVT base, and the official architecture's steps (time first, separate gates)
    "base": {},
    "official": {"groupings": ("tube", "frame"), "temporal_shift_div": 4, "fixation_shared": False},
}
STEP_VARIANTS = {  # label -> linear backend, STEP_DOT_OPERANDS, STEP_KEY_SPLIT
    "torch": ("torch", "tf32", "off"),
    "triton": ("triton", "tf32", "off"),
    "triton bf16": ("triton", "bf16", "off"),
    "triton split": ("triton", "tf32", "auto"),
    "triton bf16 split": ("triton", "bf16", "auto"),
}


def _step_section(reps: int, warmup: int) -> tuple[list[dict], str]:
    """LVT base's two attention steps (``frame`` with the temporal shift, ``tube`` with the
    spatial one; 512 wide, 8 heads), and the official architecture's (separate Q and K gates),
    timed whole, LayerNorm to residual, under each backend and each variant of the fused kernel
    (``STEP_VARIANTS``: dot operands, key split), and the fused kernel alone against the bytes of
    qkv and its output over the measured copy bandwidth."""
    from tubelet.attention.linear import LinearAttention
    from tubelet.attention.linear.fused import gate_arguments, group_layout
    from tubelet.kernels.linear_step import triton_linear_step
    from tubelet.layers.shape import VideoShape

    bandwidth = _copy_bandwidth(reps)
    lines = [
        "## step", "",
        f"One LVT attention step, bf16 autocast, median of {reps} after {warmup} (CUDA events); backward = gradients of "
        f"the input and the step's parameters. Kernel floor: qkv read once and the output written once over the copy "
        f"bandwidth measured here, {bandwidth / 1e12:.3g} TB/s. Variants: dot operands tf32 or bf16 "
        f"(`STEP_DOT_OPERANDS`), key pass split over programs (`STEP_KEY_SPLIT` auto).", "",
        "| input | model | step | variant | forward ms | forward + backward ms | fused kernel alone ms | kernel floor ms | rel. error out / grad x vs torch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = []
    for name, (batch, grid) in STEP_SHAPES.items():
        shape = VideoShape(*grid)
        x = torch.randn(batch, shape.num_patches, 512, device=DEVICE).requires_grad_()
        for model, mixer_options in STEP_MIXERS.items():
            mixer = LinearAttention(512, 8, **mixer_options).to(DEVICE)
            for step in mixer.steps:
                grad = torch.randn_like(x)
                inputs = (x, *step.parameters())
                results = {}
                for variant, (backend, dot, split) in STEP_VARIANTS.items():
                    with linear_backend(backend), STEP_DOT_OPERANDS.using(dot), STEP_KEY_SPLIT.using(split), \
                            torch.autocast(DEVICE.type, dtype=torch.bfloat16):
                        with torch.no_grad():
                            forward = statistics.median(time_repetitions(lambda: step(x, shape), DEVICE, warmup=warmup, reps=reps))
                        both = statistics.median(time_repetitions(
                            lambda: torch.autograd.grad(step(x, shape), inputs, grad), DEVICE, warmup=warmup, reps=reps))
                        out = step(x, shape)
                        results[variant] = (out.detach().float(), torch.autograd.grad(out, x, grad)[0].float())
                        assert step.uses_fused_kernel(x, shape) == (backend == "triton")
                        if backend == "triton":
                            with torch.no_grad():
                                qkv = step.attn.qkv(step.norm(x)).unflatten(-1, (3, 8, 64))
                            options = dict(feature="relu", offset=step.features.offset, eps=step.attn.core.eps,
                                           layout=group_layout(step.grouping.name, shape), grid=grid, shift=step.shift_table,
                                           **gate_arguments(step.fixation))
                            kernel = statistics.median(time_repetitions(
                                lambda: triton_linear_step(qkv, **options), DEVICE, warmup=warmup, reps=reps))
                    row = dict(section="step", input=name, model=model, step=step.grouping.name, variant=variant, backend=backend,
                               dot_operands=dot, key_split=split, forward_ms=forward * 1e3, forward_backward_ms=both * 1e3,
                               copy_bandwidth=bandwidth)
                    if backend == "triton":
                        row.update(kernel_ms=kernel * 1e3, kernel_floor_ms=(qkv.numel() + qkv.numel() // 3) * qkv.element_size() / bandwidth * 1e3,
                                   error_out=_relative(results[variant][0], results["torch"][0]),
                                   error_grad_x=_relative(results[variant][1], results["torch"][1]))
                    rows.append(row)
                    extra = (f"{row['kernel_ms']:.4g} | {row['kernel_floor_ms']:.3g} | {row['error_out']:.1e} / {row['error_grad_x']:.1e}"
                             if backend == "triton" else "- | - | -")
                    lines.append(f"| {name} | {model} | {step.grouping.name} | {variant} | {row['forward_ms']:.4g} | "
                                 f"{row['forward_backward_ms']:.4g} | {extra} |")
        del x
        torch.cuda.empty_cache()
    return rows, "\n".join(lines) + "\n"


SDPA_SHAPES = {  # length -> [sequences, heads] of the model and batch that meets it
    8: (6272, 12, "TimeSformer-B 8x224 batch 32, temporal"),
    16: (3136, 12, "16x224 batch 16, temporal"),
    32: (1568, 12, "32x224 batch 8, temporal"),
    197: (256, 12, "8x224 batch 32, spatial"),
    785: (32, 12, "a 448 px frame, 32 frames"),
}


def _sdpa_section(reps: int, warmup: int) -> tuple[list[dict], str]:
    lines = ["## sdpa", "", f"Softmax attention alone, `[N, heads, L, 64]` bf16, median of {reps} after {warmup} (CUDA events); "
             "error: relative L2 against float64 on the first 64 sequences.", "",
             "| length | shape, where | backend | forward ms | forward + backward ms | rel. error out | rel. error grads (max) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    for length, (sequences, heads, where) in SDPA_SHAPES.items():
        g = torch.Generator(device=DEVICE).manual_seed(length)
        q, k, v, grad = (torch.randn(sequences, heads, length, 64, device=DEVICE, generator=g).bfloat16() for _ in range(4))
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        wide = [t.detach()[:64].double().requires_grad_() for t in (q, k, v)]
        expected = (wide[0] @ wide[1].transpose(-2, -1) / 8.0).softmax(-1) @ wide[2]
        expected_grads = torch.autograd.grad(expected, wide, grad[:64].double())
        other_tiles = [("triton", tiles) for tiles in SHORT_ATTENTION_TILES.names if tiles != SHORT_ATTENTION_TILES.get()]
        for name, tiles in [(name, None) for name in sdpa.SDPA_BACKENDS] + other_tiles:
            label = name if tiles is None else f"{name} {tiles}"
            try:
                with sdpa.sdpa_backend(name), SHORT_ATTENTION_TILES.using(tiles):
                    forward = statistics.median(time_repetitions(lambda: sdpa.attention(q.detach(), k.detach(), v.detach()), DEVICE, warmup=warmup, reps=reps))
                    both = statistics.median(time_repetitions(lambda: torch.autograd.grad(sdpa.attention(q, k, v), (q, k, v), grad), DEVICE, warmup=warmup, reps=reps))
                    out = sdpa.attention(q[:64], k[:64], v[:64])
                    grads = torch.autograd.grad(out, (q, k, v), grad[:64])
            except (RuntimeError, ValueError) as failure:  # a kernel that cannot run the call
                lines.append(f"| {length} | {[sequences, heads, length, 64]}, {where} | {label} | - | - | - | {str(failure).splitlines()[0]} |")
                continue
            row = dict(section="sdpa", length=length, backend=label, forward_ms=forward * 1e3, forward_backward_ms=both * 1e3,
                       error_out=_relative(out, expected), error_grads=max(_relative(a[:64], b) for a, b in zip(grads, expected_grads)))
            rows.append(row)
            lines.append(f"| {length} | {[sequences, heads, length, 64]}, {where} | {label} | {row['forward_ms']:.3g} | "
                         f"{row['forward_backward_ms']:.3g} | {row['error_out']:.1e} | {row['error_grads']:.1e} |")
        del q, k, v, grad
        torch.cuda.empty_cache()
    return rows, "\n".join(lines) + "\n"


GEMM_WIDTHS = {"qkv": (768, 2304), "proj": (768, 768), "fc1": (768, 3072), "fc2": (3072, 768)}  # TimeSformer-B, (in, out)


def _gemm_section(reps: int, warmup: int) -> tuple[list[dict], str]:
    """Each of TimeSformer-B 8x224's products ``[M, in] @ [in, out]`` alone, M = batch x 8 frames x
    197 tokens (the temporal steps' 196 differ by half a percent), as a forward (``x @ w``), an
    input gradient (``dy @ w^T``) and a weight gradient (``x^T @ dy``), against the matmul peak."""
    peak = matmul_peak(DEVICE, torch.bfloat16, reps=reps)
    lines = ["## gemms", "", f"TimeSformer-B 8x224's matrix products alone, bf16, median of {reps} after {warmup} (CUDA events); "
             f"peak: a bf16 8192^3 product, {peak / 1e12:.0f} TFLOP/s in this run.", "",
             "| batch | product | [M, K] x [K, N] | ms | TFLOP/s | of peak |", "| --- | --- | --- | --- | --- | --- |"]
    rows = []
    g = torch.Generator(device=DEVICE).manual_seed(0)
    for batch in (32, 16):
        tokens = batch * 8 * 197
        for name, (width_in, width_out) in GEMM_WIDTHS.items():
            x = torch.randn(tokens, width_in, device=DEVICE, generator=g).bfloat16()
            w = torch.randn(width_in, width_out, device=DEVICE, generator=g).bfloat16()
            dy = torch.randn(tokens, width_out, device=DEVICE, generator=g).bfloat16()
            products = {"forward": (lambda: x @ w, (tokens, width_in, width_out)),
                        "input gradient": (lambda: dy @ w.t(), (tokens, width_out, width_in)),
                        "weight gradient": (lambda: x.t() @ dy, (width_in, tokens, width_out))}
            for kind, (product, (m, k, n)) in products.items():
                if batch == 32 and kind != "forward":
                    continue
                seconds = statistics.median(time_repetitions(product, DEVICE, warmup=warmup, reps=reps))
                rate = 2 * m * k * n / seconds
                rows.append(dict(section="gemms", batch=batch, product=f"{name} {kind}", m=m, k=k, n=n, ms=seconds * 1e3,
                                 flops_per_second=rate, peak=peak))
                lines.append(f"| {batch} | {name} {kind} | [{m}, {k}] x [{k}, {n}] | {seconds * 1e3:.3g} | {rate / 1e12:.0f} | {rate / peak:.0%} |")
            del x, w, dy
    return rows, "\n".join(lines) + "\n"


def _norm_launch_section(reps: int, warmup: int) -> tuple[list[dict], str]:
    """Host time per call: ``calls`` LayerNorms of ``[64, 768]`` (bf16 input, as a 16-bit residual
    stream would give) timed on the host's clock, the GPU synchronised once at the end."""
    from tubelet.layers.norm import LAYER_NORM_BACKEND, LayerNorm

    layer = LayerNorm(768).to(DEVICE)
    x = torch.randn(64, 768, device=DEVICE).bfloat16().requires_grad_()
    grad = torch.randn(64, 768, device=DEVICE).bfloat16()
    calls = 200
    lines = ["## norm-launch", "", f"Host time of one LayerNorm call on `[64, 768]` bf16 under bf16 autocast, {calls} calls "
             f"then one synchronisation, median of {reps} (us a call).", "",
             "| backend | forward, no autograd | forward + backward |", "| --- | --- | --- |"]
    rows = []
    for backend in ("torch", "triton"):
        def forward():
            with torch.no_grad():
                for _ in range(calls):
                    layer(x)

        def forward_backward():
            for _ in range(calls):
                torch.autograd.grad(layer(x), (x, layer.weight, layer.bias), grad)

        times = {}
        with LAYER_NORM_BACKEND.using(backend), torch.autocast("cuda", dtype=torch.bfloat16):
            for name, work in (("forward", forward), ("forward_backward", forward_backward)):
                samples = []
                for repetition in range(warmup + reps):
                    synchronize(DEVICE)
                    start = time.perf_counter()
                    work()
                    synchronize(DEVICE)
                    samples.append((time.perf_counter() - start) / calls * 1e6)
                times[name] = statistics.median(samples[warmup:])
        rows.append(dict(section="norm-launch", backend=backend, forward_us=times["forward"], forward_backward_us=times["forward_backward"]))
        lines.append(f"| {backend} | {times['forward']:.1f} | {times['forward_backward']:.1f} |")
    return rows, "\n".join(lines) + "\n"


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ----- where LVT's time goes -----

def _profile_section(reps: int, warmup: int) -> tuple[list[dict], str]:
    """One LVT base 16x224 forward at batch 1 (bf16, inference) under ``torch.profiler`` with each
    backend: CUDA kernel launches, CPU and GPU time, and the kernel-launching operators called most."""
    from torch.profiler import ProfilerActivity, profile

    from tubelet.models.registry import create_model
    from tubelet.models.summary import default_input_size

    with torch.device(DEVICE):
        model = create_model(LVT).eval()
        video = torch.randn(1, *default_input_size(LVT))  # [1, C, T, H, W]
    lines = ["## profile", "", f"{LVT} at its default input, batch 1, bf16 inference, one forward after {warmup} warm-up passes.", "",
             "| backend | CUDA kernels launched | CPU ms | GPU kernel ms | operators with GPU time, most called |", "| --- | --- | --- | --- | --- |"]
    rows = []
    for backend in ("torch", "triton"):
        with linear_backend(backend), torch.inference_mode(), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            for _ in range(warmup):
                model(video)
            synchronize(DEVICE)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                start = time.perf_counter()
                model(video)
                cpu_ms = (time.perf_counter() - start) * 1e3
                synchronize(DEVICE)
        events = prof.key_averages()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu_ms = sum(e.device_time for e in kernels) / 1e3
        launching = [e for e in events if e.key.startswith("aten::") and e.device_time_total > 0]  # views launch nothing
        top = sorted(launching, key=lambda e: e.count, reverse=True)[:6]
        top_text = ", ".join(f"{e.key} x{e.count}" for e in top)
        rows.append(dict(section="profile", backend=backend, cuda_kernels=len(kernels), cpu_ms=cpu_ms, gpu_ms=gpu_ms, top=top_text))
        lines.append(f"| {backend} | {len(kernels)} | {cpu_ms:.3g} | {gpu_ms:.3g} | {top_text} |")
    return rows, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    special = {"kernels": _kernel_section, "step": _step_section, "sdpa": _sdpa_section, "gemms": _gemm_section, "norm-launch": _norm_launch_section, "profile": _profile_section}
    names = [*special, *_sections(10, 3)]
    quick = [name for name in names if name not in ("compiled", "autotune")]
    parser.add_argument("--out", required=True, help="folder for gpu_throughput.md and gpu_throughput.json")
    parser.add_argument("--sections", nargs="+", default=quick, choices=names, metavar="NAME", help=f"any of {', '.join(names)} (default: all but compiled and autotune)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--step-dot-operands", default=STEP_DOT_OPERANDS.get(), choices=STEP_DOT_OPERANDS.names,
                        help="the fused linear step's dot operands for every section but step (which compares them)")
    parser.add_argument("--step-key-split", default="off", choices=STEP_KEY_SPLIT.names,
                        help="the fused linear step's key split for every section but step")
    parser.add_argument("--step-short-group", type=int, default=step_kernels.SHORT_GROUP,
                        help="groups of at most this many tokens take the fused step's forward block that pads least (0: never)")
    parser.add_argument("--short-attention-tiles", default=SHORT_ATTENTION_TILES.get(), choices=SHORT_ATTENTION_TILES.names,
                        help="how the short-key softmax kernels tile their sequences, for every section (sdpa compares both)")
    args = parser.parse_args()
    SHORT_ATTENTION_TILES.set(args.short_attention_tiles)
    STEP_DOT_OPERANDS.set(args.step_dot_operands)
    STEP_KEY_SPLIT.set(args.step_key_split)
    step_kernels.SHORT_GROUP = args.step_short_group
    if not torch.cuda.is_available():
        sys.exit("gpu_throughput.py: error: no CUDA device (tubelet bench runs on the CPU instead)")
    out = Path(args.out)
    sections = _sections(args.reps, args.warmup)
    rows, parts = [], [f"# GPU throughput: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
                       f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
                       f"Command: `PYTHONPATH=src python3 benchmarks/gpu_throughput.py --out OUT --sections {' '.join(args.sections)} "
                       f"--reps {args.reps} --warmup {args.warmup} --step-dot-operands {args.step_dot_operands} "
                       f"--step-key-split {args.step_key_split} --step-short-group {args.step_short_group} "
                       f"--short-attention-tiles {args.short_attention_tiles}`", ""]
    for name in args.sections:
        start = time.perf_counter()
        try:
            section_rows, text = special[name](args.reps, args.warmup) if name in special else _bench_section(name, *sections[name])
        except Exception as error:  # one broken section must not lose the others' numbers
            section_rows, text = [dict(section=name, status="error", message=repr(error))], f"## {name}\n\nfailed: {error!r}\n"
        rows += section_rows
        parts.append(text + f"\n({time.perf_counter() - start:.0f} s)\n")
        atomic_write_text(out / "gpu_throughput.md", "\n".join(parts))
        atomic_write_json(out / "gpu_throughput.json", rows)
        print(text, flush=True)


if __name__ == "__main__":
    main()
