"""Distributed data parallel under ``torchrun``: NCCL on GPU, gloo on CPU.

``torchrun --nproc-per-node N -m tubelet.cli train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
without them everything runs in one process. A process that torchrun launched always joins the
process group, even alone (``--nproc-per-node 1``), so that one GPU runs the code path (DDP, NCCL
collectives) that eight take. Only rank 0 logs and writes files.

Collectives take tensors on the process group's device (the GPU under NCCL, the CPU under gloo):
``all_reduce_sum`` refuses any other with a message naming both, and ``DistContext.mean`` reduces
Python floats, building the tensor on the right device itself.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tubelet.engine.device import resolve_device

# NVLink multicast (NVLS) off: NCCL's, PyTorch's symmetric memory's and NVSHMEM's. The lender's
# multi-GPU machines need these set in every process that torchrun starts; a launcher that builds
# the environment of torchrun's processes adds them (``launch_environment``).
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def launch_environment(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a ``torchrun`` subprocess: ``base`` (default ``os.environ``), ``NO_MULTICAST``, ``extra``."""
    return {**(os.environ if base is None else base), **NO_MULTICAST, **extra}


@dataclass(frozen=True)
class DistContext:
    """This process's rank, the number of processes, its device, and whether it joined a process group."""

    rank: int
    world_size: int
    device: torch.device
    joined: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """In a process group (DDP wraps the model), possibly of one process."""
        return self.joined

    def mean(self, values: list[float]) -> list[float]:
        """The mean of each value over processes (the values themselves in one process)."""
        total = all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=self.device))
        return [v / self.world_size for v in total.tolist()]


def launched_by_torchrun() -> bool:
    """True when a launcher (torchrun, torch.distributed.run) describes a process group in the environment."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(device: str) -> DistContext:
    """Join the process group that torchrun describes in the environment, if it launched this process."""
    resolved = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if not launched_by_torchrun():
        return DistContext(rank=0, world_size=1, device=resolved)
    if not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=resolved, joined=True)


def shutdown_distributed() -> None:
    """Leave the process group. Unreachable objects are collected first: FSDP2's modules sit in
    reference cycles that hold the group's work, and freed after the group (at interpreter exit)
    they aborted one run in about ten of a 2-process gloo job ("terminate called without an
    active exception")."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def group_device_type() -> str:
    """The device type the joined process group's collectives need: "cuda" for NCCL, else "cpu"."""
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (identity in one process). ``tensor`` must be on the group's device."""
    if dist.is_initialized():
        if tensor.device.type != group_device_type():
            raise ValueError(f"all_reduce_sum got a {tensor.device.type} tensor but the {dist.get_backend()} "
                             f"process group needs {group_device_type()} tensors")
        dist.all_reduce(tensor)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in one process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
