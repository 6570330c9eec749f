"""CUDA graphs for small inference batches: ``InferenceGraphs(model)`` runs the model's forward
from a graph captured once per input shape, so that the host launches a whole forward in one call.

At small batches a forward is bound by the host, not the GPU: at batch 1 MViTv2-S launches ~930
kernels that take the H200 4.4 ms, and launching them takes the CPU 20-28 ms. Measured on an H200
(BENCHMARKS.md, videos/s, eager -> graph): MViTv2-S 16x224 at batch 1, 2, 4, 8: 52 -> 217, 114 ->
303, 139 -> 382, 228 -> 470; TimeSformer-B 8x224: 72 -> 350, 203 -> 460, 204 -> 672, 393 -> 811.
``CUDA_GRAPHS`` (a ``tubelet.switch.Switch``) picks:

- ``auto`` (default): a graph on CUDA for batches of at most ``GRAPH_MAX_BATCH`` clips, where the
  host bounds the forward; eager for larger ones;
- ``on``: a graph for every batch on CUDA;
- ``off``: eager.

Graphs are used only where they compute what eager does: on CUDA, without autograd, outside
``torch.compile``, and for a model whose forward does not talk to other processes (FSDP's
gathers of sharded weights, DDP's broadcasts of buffers) or hold DTensor weights. A graph
replays the kernels on the addresses it captured: each call copies its input into the graph's
input buffer, reads the weights where they are (so updates in place, as optimisers and
``load_state_dict`` make them, are seen), and returns a copy of the output. A model moved or
rebuilt needs a new ``InferenceGraphs``. At most ``MAX_GRAPHS`` shapes are captured, later ones
run eagerly; a shape whose capture fails (a forward that waits for the host) runs eagerly after
one warning that says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from tubelet.switch import Switch

CUDA_GRAPHS = Switch("CUDA graphs for inference", ["auto", "on", "off"], "auto")
GRAPH_MAX_BATCH = 8  # auto: clips in a batch up to which graphs were measured 2x faster or more (above)
MAX_GRAPHS = 4  # shapes captured per InferenceGraphs; each holds its own activations' memory
WARMUP_RUNS = 2  # eager runs on a side stream before a capture: Triton compiles, cuBLAS picks its kernels


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    input: torch.Tensor
    output: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.input.copy_(x)
        self.graph.replay()
        return self.output.clone()


class InferenceGraphs:
    """``model``'s forward ``[B, ...] -> [B, ...]`` (one tensor in, one out; a module or any callable
    of one tensor), from CUDA graphs where ``CUDA_GRAPHS`` and the call allow it (module
    docstring), eagerly otherwise."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]):
        self.model = model
        self.local = not (isinstance(model, nn.Module) and _distributed(model))
        self.graphs: dict[tuple, _Graph | None] = {}  # None: this shape runs eagerly

    def uses_graph(self, x: torch.Tensor) -> bool:
        """Whether ``self(x)`` replays a graph (once captured) now."""
        setting = CUDA_GRAPHS.get()
        if (setting == "off" or not x.is_cuda or not self.local or torch.is_grad_enabled()
                or torch.compiler.is_compiling()):
            return False
        return setting == "on" or x.shape[0] <= GRAPH_MAX_BATCH

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.uses_graph(x):
            return self.model(x)
        autocast = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        key = (tuple(x.shape), x.dtype, x.device, x.stride(), *autocast)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, *autocast) if len(self.graphs) < MAX_GRAPHS else None
        graph = self.graphs[key]
        return graph(x) if graph is not None else self.model(x)

    def _capture(self, x: torch.Tensor, autocast: bool, dtype: torch.dtype) -> _Graph | None:
        """The forward on a copy of ``x`` captured in a graph, under the caller's autocast with its
        weight cache off (a capture must not keep casts that the region's end frees)."""
        static_input = x.clone()
        device = x.device

        def region():
            return torch.autocast("cuda", dtype=dtype, enabled=autocast, cache_enabled=False)

        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), region():
                for _ in range(WARMUP_RUNS):
                    self.model(static_input)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), region():
                static_output = self.model(static_input)
        except RuntimeError as error:
            warnings.warn(f"a CUDA graph of a batch of shape {tuple(x.shape)} could not be captured, "
                          f"so it runs eagerly: {' '.join(str(error).split())}", stacklevel=3)
            return None
        if not isinstance(static_output, torch.Tensor):
            return None
        return _Graph(graph, static_input, static_output)


def _distributed(model: nn.Module) -> bool:
    """Whether ``model`` is (or holds) an FSDP or DDP module, or DTensor weights."""
    return (any(isinstance(m, (FSDPModule, DistributedDataParallel)) for m in model.modules())
            or any(isinstance(p, DTensor) for p in model.parameters()))
