"""``tubelet bench``: throughput, latency, peak memory, parameters, FLOPs and MFU of chosen models
over a grid of frames, sizes and batch sizes, for inference or a training step.

For every (model, frames, size) the model is built once on the device; for every batch size one
cell is measured: ``warmup`` untimed steps, then the median of ``reps`` timed ones (CUDA events on
the GPU, ``perf_counter`` on the CPU). A step is one forward pass under ``torch.no_grad``
(``infer``; the steps of a cell share autocast's weight cache), or forward, cross-entropy,
backward and an AdamW update (``train``); with ``bf16`` the forward runs under autocast, weights
stay float32 (AdamW: ``tubelet.engine.optim.adamw``, the engine's). An out-of-memory error or any other
failure (a compile that breaks, say) becomes that cell's status, and the grid goes on.

FLOPs are counted once per (model, frames, size) by ``torch.utils.flop_counter`` on the ``meta``
device (``tubelet.models.summary.model_cost``): the forward FLOPs of one clip, whose half is the
papers' multiply-accumulate count (GMACs). A training step counts three forward passes (the
backward pass as twice the forward, the usual convention). MFU is the step's FLOPs per second
over the matrix-multiply peak measured at the start of the same run (bf16 on CUDA, float32 on
the CPU). With ``compare``, each cell also runs the same architecture from another library
(``tubelet.bench.reference``) on the same weights, after checking that the logits agree; its
rows use the tubelet model's FLOP count, since both compute the same function.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import platform
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.attention.layout import ATTENTION_LAYOUT
from tubelet.attention.linear import functional
from tubelet.attention.sdpa import get_sdpa_backend
from tubelet.attention.fast_paths import fast_paths
from tubelet.layers.norm import LAYER_NORM_BACKEND
from tubelet.bench.reference import ReferenceUnavailable, build_reference
from tubelet.bench.timing import PEAK_SIZES, matmul_peak, time_repetitions
from tubelet.engine.device import resolve_device
from tubelet.engine.graphs import CUDA_GRAPHS, InferenceGraphs
from tubelet.engine.optim import adamw
from tubelet.models.registry import create_model, model_arguments
from tubelet.models.summary import default_input_size, model_cost

MODES = ("infer", "train")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
TRAIN_FLOPS_PER_FORWARD = 3
# Largest relative difference of the logits (float32, no autocast) at which two implementations
# are taken to compute the same function; float32 reorderings stay near 1e-6.
AGREEMENT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Empty ``frames`` / ``sizes`` mean each model's default input;
    ``compile`` is a ``torch.compile`` mode (``"default"``, ``"max-autotune"``, ...) or None;
    ``cuda_graph`` runs inference from the engine's CUDA graphs (``tubelet.engine.graphs``, what
    evaluation and prediction do for small batches) and times the replays;
    ``overrides`` are constructor arguments of every model; ``linear_backend`` picks the
    implementation of linear attention (``tubelet.attention.linear.functional``) and
    ``sdpa_backend`` the kernel of softmax attention (``tubelet.attention.sdpa``), ``norm_backend``
    LayerNorm's (``tubelet.layers.norm``), ``layout`` how attention lays out its groups of tokens
    (``tubelet.attention.layout``)."""

    models: tuple[str, ...]
    frames: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()
    batches: tuple[int, ...] = (1,)
    mode: str = "infer"
    device: str = "auto"
    dtype: str = "auto"
    reps: int = 10
    warmup: int = 3
    compare: bool = False
    compile: str | None = None
    cuda_graph: bool = False
    overrides: dict = field(default_factory=dict)
    linear_backend: str | None = None
    sdpa_backend: str | None = None
    norm_backend: str | None = None
    layout: str | None = None


@dataclass
class Implementation:
    """One side of a cell: a callable on the prepared input, and the module it trains."""

    name: str  # "tubelet" or the reference library, e.g. "transformers 5.17.0"
    module: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    num_classes: int
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda video: video
    note: str = ""


def parse_overrides(items: list[str]) -> dict:
    """``["depth=2", "attention_options={variant: performer}"]`` -> constructor arguments (YAML values)."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r} is not of the form key=value")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as error:
            raise ValueError(f"--set {item!r} is not YAML: {' '.join(str(error).split())}") from None
    return overrides


def resolve_dtype(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return name


linear_backend = functional.LINEAR_BACKEND.using  # a block with one linear attention backend (None: unchanged)


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(error)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _free(device: torch.device) -> None:
    """Return what a finished model or a failed cell held (reference cycles included) to the device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _environment(config: BenchConfig, device: torch.device, dtype: str, peak: float) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return dict(
        device=name, torch=torch.__version__, dtype=dtype, mode=config.mode, compile=config.compile, cuda_graph=config.cuda_graph,
        linear_backend=config.linear_backend or functional.get_backend(),
        sdpa_backend=config.sdpa_backend or get_sdpa_backend(), norm_backend=config.norm_backend or LAYER_NORM_BACKEND.get(),
        layout=config.layout or ATTENTION_LAYOUT.get(), reps=config.reps, warmup=config.warmup,
        timer="CUDA events" if device.type == "cuda" else "perf_counter",
        matmul_peak_flops=peak, matmul_peak_dtype="bf16" if device.type == "cuda" else "fp32",
        matmul_peak_size=PEAK_SIZES[device.type],
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _autocast(device: torch.device, dtype: str):
    """bf16 autocast (or none for fp32)."""
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")


def _weight_cache_region(config: BenchConfig, device: torch.device, dtype: str):
    """Inference steps share one autocast region, as a serving loop inside one ``torch.autocast``
    does: autocast keeps the 16-bit copy of each weight for the region (under ``torch.no_grad``;
    ``torch.inference_mode`` turns that cache off), so only the first step casts the weights (one
    launch per weight and bias: 210 of TimeSformer-B's 496 at batch 1, H200 profile in
    BENCHMARKS.md). Each step still enters its own autocast inside; both implementations run
    under the same region. Training steps and CUDA graphs (whose replays run the casts they
    captured) keep their own."""
    if config.mode != "infer" or config.cuda_graph:
        return contextlib.nullcontext()
    return _autocast(device, dtype)


def measure(impl: Implementation, shape: tuple[int, ...], config: BenchConfig, device: torch.device, dtype: str) -> dict:
    """Step times and peak memory of one implementation on a random video of ``shape``
    ``[B, C, T, H, W]`` (the same video for every implementation)."""
    generator = torch.Generator(device=device).manual_seed(0)
    inputs = impl.prepare(torch.randn(shape, device=device, generator=generator))
    forward = impl.forward
    if config.compile:
        # Compile afresh for each cell, for its static shapes: one compiled graph per input, and
        # no cell falls back to eager because an earlier one used up the recompilation limit.
        torch._dynamo.reset()
        forward = torch.compile(impl.forward, mode=config.compile, dynamic=False)
    if device.type == "cuda":  # before a graph capture, which allocates the activations
        torch.cuda.reset_peak_memory_stats(device)
    if config.mode == "infer":
        impl.module.eval()

        # With --cuda-graph, the replays of the engine's own graphs (tubelet.engine.graphs), as
        # evaluation and prediction run small batches: the first step captures.
        run = InferenceGraphs(forward) if config.cuda_graph else forward

        def step():
            with torch.no_grad(), _autocast(device, dtype):
                return run(inputs)

    else:
        impl.module.train()
        optimizer = adamw(impl.module.parameters(), lr=1e-5)  # the engine's AdamW, for every implementation
        labels = torch.randint(0, impl.num_classes, shape[:1], device=device, generator=generator)

        def step():
            with _autocast(device, dtype):
                logits = forward(inputs)
            F.cross_entropy(logits.float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    try:
        with _weight_cache_region(config, device, dtype), CUDA_GRAPHS.using("on" if config.cuda_graph else None):
            times = time_repetitions(step, device, warmup=config.warmup, reps=config.reps)
    finally:
        impl.module.eval()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return dict(times_s=times, peak_memory_bytes=peak)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """float32 matmuls and convolutions without TF32 (cuDNN allows it by default), then restore."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_agreement(first: Implementation, second: Implementation, video: torch.Tensor) -> float:
    """Relative difference ``|a - b| / |b|`` of the two implementations' float32 logits."""
    with torch.inference_mode(), exact_float32():
        a = first.forward(first.prepare(video)).float()
        b = second.forward(second.prepare(video)).float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _implementations(name: str, args: dict, config: BenchConfig, device: torch.device) -> tuple[list[Implementation], str]:
    """The tubelet model and, with ``compare``, the reference (or the reason it is unavailable)."""
    unavailable = ""
    if config.compare:
        try:
            reference = build_reference(name, args, device)
        except ReferenceUnavailable as reason:
            unavailable = str(reason)
        else:
            model = reference.tubelet
            theirs = Implementation(reference.library, reference.module, reference.forward, model.num_classes,
                                    reference.prepare, reference.note)
            return [Implementation("tubelet", model, model, model.num_classes), theirs], ""
    with torch.device(device):
        model = create_model(name, **args).eval()
    return [Implementation("tubelet", model, model, model.num_classes)], unavailable


def _cells(name: str, config: BenchConfig) -> Iterator[tuple[int, int, dict]]:
    _, default_frames, default_size, _ = default_input_size(name, **config.overrides)
    for frames in config.frames or (default_frames,):
        for size in config.sizes or (default_size,):
            yield frames, size, {**config.overrides, "num_frames": frames, "img_size": size}


def run_bench(config: BenchConfig, log: Callable[[str], None] = lambda line: None) -> dict:
    """Measure every cell of ``config``; returns ``{"environment": {...}, "rows": [...]}``, one row
    per (model, frames, size, batch, implementation) with a ``status`` of ok / OOM / error /
    unavailable."""
    if config.mode not in MODES:
        raise ValueError(f"mode {config.mode!r}: expected one of {', '.join(MODES)}")
    if not config.models:
        raise ValueError("no models to bench: name at least one (`tubelet models` lists them)")
    for name in config.models:
        model_arguments(name, config.overrides)  # unknown names and arguments fail before any timing
    device = resolve_device(config.device, what="--device")
    dtype = resolve_dtype(config.dtype, device)
    if config.cuda_graph and (device.type != "cuda" or config.mode != "infer"):
        raise ValueError("--cuda-graph captures inference steps on a CUDA device only")
    peak = matmul_peak(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    rows = []
    with fast_paths(sdpa=config.sdpa_backend, linear=config.linear_backend, norm=config.norm_backend, layout=config.layout):
        for name in config.models:
            for frames, size, args in _cells(name, config):
                rows += _bench_model(name, frames, size, args, config, device, dtype, peak, log)
    return dict(environment=_environment(config, device, dtype, peak), rows=rows)


def _bench_model(name, frames, size, args, config, device, dtype, peak, log) -> list[dict]:
    with linear_backend("torch"):  # the meta device runs no fused kernel; both compute the same function
        cost = model_cost(name, **args)
    base = dict(model=name, frames=frames, size=size, mode=config.mode, dtype=dtype, compile=config.compile,
                cuda_graph=config.cuda_graph, gmacs_per_clip=cost.gmacs,
                flops_per_clip=cost.flops * (TRAIN_FLOPS_PER_FORWARD if config.mode == "train" else 1))
    failure = None
    try:
        impls, unavailable = _implementations(name, args, config, device)
        probe = torch.randn(1, cost.input_size[0], frames, size, size, device=device)  # [1, C, T, H, W]
        agreement = check_agreement(*impls, probe) if len(impls) == 2 else None
    except Exception as error:  # large inputs can run out of memory here already: cells, not a crash
        failure = dict(status="OOM" if _is_oom(error) else "error", message=_one_line(error))
    if failure:
        _free(device)
        return [dict(base, implementation="tubelet", batch=batch, **failure) for batch in config.batches]
    rows = []
    for batch in config.batches:
        shape = (batch, cost.input_size[0], frames, size, size)  # [B, C, T, H, W]
        for impl in impls:
            row = dict(base, implementation=impl.name, batch=batch, params=sum(p.numel() for p in impl.module.parameters()),
                       note=impl.note)
            if impl is not impls[0]:
                row["logits_relative_difference"] = agreement
            if agreement is not None and agreement > AGREEMENT_TOLERANCE:
                row.update(status="error", message=f"outputs differ: relative difference of the logits {agreement:.2e}")
            else:
                row.update(_timed_cell(impl, shape, config, device, dtype, peak, row["flops_per_clip"] * batch))
            log(_progress(row))
            rows.append(row)
        if unavailable:
            rows.append(dict(base, implementation="reference", batch=batch, status="unavailable", message=unavailable))
    del impls
    _free(device)
    return rows


def _timed_cell(impl, shape, config, device, dtype, peak, step_flops) -> dict:
    failure = None
    try:
        result = measure(impl, shape, config, device, dtype)
    except Exception as error:  # OOM, or a failure of torch.compile: this cell's status
        failure = dict(status="OOM" if _is_oom(error) else "error", message=_one_line(error))
    if failure:
        _free(device)  # now that the traceback, and the tensors its frames hold, are gone
        return failure
    median = statistics.median(result["times_s"])
    return dict(
        status="ok", latency_ms=median * 1e3, videos_per_s=shape[0] / median,
        mfu=step_flops / median / peak, **result,
    )


def _progress(row: dict) -> str:
    cell = f"{row['model']} {row['implementation']} {row['frames']}x{row['size']} batch {row['batch']}"
    if row["status"] != "ok":
        return f"{cell}: {row['status']} {row.get('message', '')}"
    return f"{cell}: {row['videos_per_s']:.3g} videos/s, {row['latency_ms']:.3g} ms, MFU {row['mfu']:.1%}"

