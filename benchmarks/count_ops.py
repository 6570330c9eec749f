"""What one forward of a registered model launches, counted on the CPU: ``torch.profiler`` (with
shapes) over one bf16-autocast inference forward, the ATen ops that would launch a GPU kernel
counted by kind (the innermost ops that are not views or allocations; matmuls, convolutions,
norms, attention and elementwise ops as one each, whatever the CPU runs inside them), and the
bytes that copies and concatenations move. Without a GPU this is what transfers from the CPU to
the GPU profile (``profile_model.py``): launches (~5 us each at batch 1 on the H200) and copied
bytes (at ~4 TB/s). Counted with a cast of each weight per forward (as ``profile_model.py`` runs,
under ``inference_mode``), MViTv2-S before issue 9's copy work had 1,192 launches and 603 copies
here, against the 1,341 kernels and 607 copies of its H200 profile.

CPU autocast differs from CUDA's in the ops MViT uses; for the counts to be CUDA's, this script
gives the CPU CUDA's policy for them: ``layer_norm`` casts its input to float32 and returns
float32, ``einsum`` casts to 16 bits, max and average pooling run in their input's dtype (CPU
autocast runs them in float32). ``--positions`` picks the relative-position path of MViT's
pooling attention (default ``folded``, CUDA's default), ``--layout`` the attention layout
(``permute``: token groups as copies, ``view``: as strided views; the copy counts in
``benchmarks/NOTES.md``, "Copy-free temporal layout", come from it).

    PYTHONPATH=src python3 benchmarks/count_ops.py MODEL [--frames T] [--size S] [--batch B]
        [--dtype bf16|fp32] [--positions folded|bias] [--layout auto|permute|view] [--top 12] [key=value ...]
"""

from __future__ import annotations

import argparse
import collections
import math
import warnings

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

import tubelet.attention.pooling as pooling
from model_input import add_model_arguments, model_and_video
from tubelet.attention.layout import ATTENTION_LAYOUT

# Leaf ops that launch nothing on the GPU: views, allocations, metadata.
NO_KERNEL = {
    "aten::empty", "aten::empty_strided", "aten::as_strided", "aten::view", "aten::_unsafe_view",
    "aten::_reshape_alias", "aten::alias", "aten::resize_", "aten::detach", "aten::lift_fresh",
    "aten::transpose", "aten::permute", "aten::expand", "aten::slice", "aten::select", "aten::unsqueeze",
    "aten::squeeze", "aten::t", "aten::narrow", "aten::split", "aten::unflatten", "aten::flatten",
    "aten::reshape", "aten::view_as", "aten::result_type", "aten::set_", "aten::split_with_sizes",
    "aten::unbind", "aten::chunk", "aten::expand_as", "aten::_unsafe_split", "aten::contiguous", "aten::to",
    "aten::resolve_conj", "aten::as_strided_", "aten::dropout", "aten::unfold", "aten::empty_like", "aten::new_empty",
}
# Ops counted as one launch with what they call inside (the CPU's inner copies, of a matmul's bias
# into its output or of a convolution's output, have no counterpart in the CUDA kernels).
OPAQUE = {
    "aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::native_layer_norm", "aten::_convolution",
    "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::max_pool3d", "aten::avg_pool3d", "aten::gelu",
    "aten::repeat",  # one copy kernel on CUDA; the CPU's builds an index with a concatenation first
    "aten::add", "aten::mul", "aten::sub", "aten::div", "aten::addcmul",  # one kernel on CUDA for mixed dtypes; the CPU copies
    "aten::gather",  # the CPU's gathers 16-bit values through float32 copies
}
KINDS = {  # leaf op -> kind, as the GPU profile groups the kernels
    "aten::copy_": "copy", "aten::repeat": "copy", "aten::cat": "cat", "aten::native_layer_norm": "layer_norm",
    "aten::addmm": "matmul", "aten::mm": "matmul", "aten::bmm": "matmul", "aten::baddbmm": "matmul",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention", "aten::_convolution": "convolution",
    "aten::fill_": "fill", "aten::zero_": "fill",
}
SIZES = {"float": 4, "c10::BFloat16": 2, "c10::Half": 2, "double": 8, "long int": 8, "int": 4, "bool": 1, "signed char": 1}


def numel(shape) -> int:
    return math.prod(shape) if shape else 1


def tensor_bytes(shape, dtype: str) -> int:
    return numel(shape) * SIZES.get(dtype, 4)


def kind(name: str) -> str:
    if name in KINDS:
        return KINDS[name]
    if "pool" in name:
        return "pooling"
    return "elementwise/other"


def moved_bytes(event, cat_bytes: dict) -> int:
    """Bytes read and written by a copy or a concatenation (0 for other ops)."""
    shapes, dtypes = event.input_shapes, event.input_dtypes
    if event.name == "aten::copy_":  # copy_(self, src): write self, read src
        return tensor_bytes(shapes[0], dtypes[0]) + tensor_bytes(shapes[1], dtypes[1])
    if event.name == "aten::cat":  # the profiler records no shapes of a TensorList: its output's, read and written
        return 2 * cat_bytes.get(event.id, 0)
    return 0


def caller(event) -> str:
    """The outermost ATen op above ``event``: what the Python code called."""
    names = []
    while event is not None:
        if event.name.startswith("aten::"):
            names.append(event.name)
        event = event.cpu_parent
    return names[-1]


def follow_cuda_autocast() -> torch.library.Library:
    """CPU autocast made to follow CUDA's for layer_norm, einsum and 3D pooling (see above), for
    as long as the returned library lives."""
    library = torch.library.Library("aten", "IMPL")
    off = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

    def layer_norm(x, shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
        with torch._C._ExcludeDispatchKeyGuard(off):
            return torch.ops.aten.layer_norm(x.float(), shape, weight, bias, eps, cudnn_enable)

    def einsum(equation, operands, path=None):
        with torch._C._ExcludeDispatchKeyGuard(off):
            return torch.ops.aten.einsum(equation, [o.to(torch.get_autocast_dtype("cpu")) for o in operands], path=path)

    def in_own_dtype(op):
        def run(*args, **kwargs):
            with torch._C._ExcludeDispatchKeyGuard(off):
                return op(*args, **kwargs)
        return run

    with warnings.catch_warnings():  # "overriding a previously registered kernel"
        warnings.simplefilter("ignore")
        library.impl("layer_norm", layer_norm, "AutocastCPU")
        library.impl("einsum", einsum, "AutocastCPU")
        for name in ("max_pool3d", "avg_pool3d"):
            library.impl(name, in_own_dtype(getattr(torch.ops.aten, name).default), "AutocastCPU")
    return library


def launches(event) -> list:
    """The ops under (and including) ``event`` that launch a kernel."""
    if event.name in OPAQUE:
        return [event]
    inner = [op for child in event.cpu_children if child.name.startswith("aten::") for op in launches(child)]
    if inner:
        return inner
    scalar = event.name in ("aten::copy_", "aten::_to_copy") and not event.input_shapes[0]  # a Python number made a CPU tensor
    return [] if event.name in NO_KERNEL or scalar else [event]


class CatSizes(TorchDispatchMode):
    """The output bytes of every ``aten.cat``, in call order."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.cat.default:
            self.sizes.append(out.numel() * out.element_size())
        return out


def count(model, video, dtype: str) -> tuple[list, dict]:
    """The launching ops of one forward as ``tubelet bench`` runs inference (``torch.no_grad``, the
    steps inside one autocast region, so that autocast's weight casts are made by the warm-up
    only), and each cat's output bytes by event id."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        with CatSizes() as cats:  # also the warm-up (lazy initialisation, the weight casts)
            model(video)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            model(video)
    roots = [e for e in prof.events() if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    ops = sorted((op for root in roots for op in launches(root)), key=lambda e: e.time_range.start)
    cat_events = [e for e in ops if e.name == "aten::cat"]
    if len(cat_events) != len(cats.sizes):
        raise RuntimeError(f"{len(cat_events)} profiled concatenations against {len(cats.sizes)} dispatched")
    return ops, {e.id: size for e, size in zip(cat_events, cats.sizes)}


def report(ops, cat_bytes: dict, top: int) -> str:
    kinds = collections.Counter()
    kind_bytes = collections.Counter()
    callers = collections.Counter()
    caller_bytes = collections.Counter()
    for e in ops:
        k = kind(e.name)
        kinds[k] += 1
        kind_bytes[k] += moved_bytes(e, cat_bytes)
        if k in ("copy", "cat"):
            key = f"{caller(e)} -> {e.name}" if caller(e) != e.name else e.name
            callers[key] += 1
            caller_bytes[key] += moved_bytes(e, cat_bytes)
    moved = sum(kind_bytes.values())
    lines = [f"{len(ops)} kernel launches; copies and concatenations move {moved / 1e6:.1f} MB", "",
             "| kind | launches | MB moved |", "| --- | --- | --- |"]
    lines += [f"| {k} | {n} | {kind_bytes[k] / 1e6:.1f} |" if kind_bytes[k] else f"| {k} | {n} | |" for k, n in kinds.most_common()]
    lines += ["", "| copy or cat, by the op the code called | launches | MB moved |", "| --- | --- | --- |"]
    lines += [f"| {c} | {n} | {caller_bytes[c] / 1e6:.1f} |" for c, n in callers.most_common(top)]
    other = collections.Counter({e.name: 0 for e in ops if kind(e.name) == "elementwise/other"})
    for e in ops:
        if e.name in other:
            other[e.name] += 1
    lines += ["", "elementwise/other: " + ", ".join(f"{name[6:]} {n}" for name, n in other.most_common())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--positions", choices=("folded", "bias"), default="folded")
    parser.add_argument("--layout", choices=ATTENTION_LAYOUT.names, default=ATTENTION_LAYOUT.get(),
                        help="attention layout (tubelet.attention.layout): copies of token groups or views")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    model, video = model_and_video(args, torch.device("cpu"))
    pooling.RELATIVE_POSITIONS = args.positions
    policy = follow_cuda_autocast()  # noqa: F841 (its registrations last while it lives)
    print(f"{args.model} {video.shape[2]}x{video.shape[3]} batch {args.batch} {args.dtype}, {args.positions} positions, "
          f"{args.layout} layout")
    with ATTENTION_LAYOUT.using(args.layout):
        print(report(*count(model.eval(), video, args.dtype), args.top))


if __name__ == "__main__":
    main()
