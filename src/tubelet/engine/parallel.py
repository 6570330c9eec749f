"""How the training model runs over the processes of ``torchrun``: ``train.parallel``.

``ddp``   every process holds the whole model; DDP averages the gradients after each backward.
``fsdp``  FSDP2 (``torch.distributed.fsdp.fully_shard``): each transformer block, then the rest
          of the model (the root: embeddings, norm, head), is sharded over the processes; a block's
          weights are gathered for its forward and its backward and freed after them, and the
          gradients are reduce-scattered, so each process stores 1/N of the weights, gradients and
          optimiser state. On CUDA with bf16 precision the gathered weights and the forward are
          bf16, gradients reduced in float32 (``MixedPrecisionPolicy``); elsewhere float32.

A process not launched by torchrun runs the plain model either way. Both give the same weights
as one process at the same global batch, up to float reductions (tests/engine/test_parallel.py).

Checkpoints do not depend on the choice: ``full_state`` gathers the whole weights and optimiser
state in the layout of a plain model's ``state_dict()``, so a run saved on N processes with either
strategy resumes on M with either (``load_full_state``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from tubelet.engine.config import TrainConfig
from tubelet.engine.distributed import DistContext


def check_parallel(train: TrainConfig) -> None:
    """Refuse the settings FSDP cannot train with, naming the keys."""
    if train.parallel != "fsdp":
        return
    if train.ema_decay is not None:
        raise ValueError(f"train.ema_decay={train.ema_decay} is not supported with train.parallel=fsdp (the average "
                         f"would be a second, unsharded copy of the model); use train.parallel=ddp or no EMA")
    if train.precision == "fp16":
        raise ValueError("train.precision=fp16 is not supported with train.parallel=fsdp (the grad scaler's "
                         "overflow check would see only this process's shard); use bf16")


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks FSDP shards one by one: those of the model's ``block_groups``, in depth order."""
    return [block for group in getattr(model, "block_groups", ()) for block in getattr(model, group)]


def _reshards_after_forward(module: nn.Module, root: nn.Module) -> bool:
    """A block frees its gathered weights after its forward (gathered again for its backward); the
    root keeps them, as backward needs them first (the head)."""
    return module is not root


def wrap_model(model: nn.Module, parallel: str, dist: DistContext, amp_dtype: torch.dtype | None) -> nn.Module:
    """What runs ``model`` (already on ``dist.device``) in training. DDP returns a wrapper; FSDP
    shards ``model`` in place and returns it. Not distributed: ``model`` itself."""
    if not dist.distributed:
        return model
    if parallel == "ddp":
        return DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    policy = MixedPrecisionPolicy()
    if dist.device.type == "cuda" and amp_dtype == torch.bfloat16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for module in [*transformer_blocks(model), model]:  # the root last: it takes what the blocks leave
        fully_shard(module, reshard_after_forward=_reshards_after_forward(module, model), mp_policy=policy)
    return model


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile's wrapper


def gradient_sync(model: nn.Module, enabled: bool) -> AbstractContextManager:
    """Backward within it averages gradients over processes only if ``enabled``; without, they
    accumulate on each process (the micro-batches of gradient accumulation before the last)."""
    inner = _unwrapped(model)
    if enabled:
        return nullcontext()
    if isinstance(inner, DistributedDataParallel):
        return inner.no_sync()
    if isinstance(inner, FSDPModule):
        return _fsdp_no_sync(inner)
    return nullcontext()


@contextmanager
def _fsdp_no_sync(model: FSDPModule) -> Iterator[None]:
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Scale the gradients to a global 2-norm of at most ``max_norm``; returns the norm before.
    Sharded gradients (DTensors) contribute their shards, summed over processes."""
    parameters = list(parameters)
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return float(norm)


def _sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


@contextmanager
def whole_weights(module: nn.Module) -> Iterator[None]:
    """Within it every process holds all of ``module``'s weights, gathered once (a no-op unless
    FSDP shards it), so processes may run different numbers of forward passes: evaluation's shards
    of the videos differ by one where the count does not divide. All processes must enter it."""
    sharded = [m for m in module.modules() if _sharded(m)]
    for m in sharded:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in sharded:
            m.reshard()
            m.set_reshard_after_forward(_reshards_after_forward(m, module), recurse=False)


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The whole weights and optimiser state, laid out as a plain model's ``state_dict()`` and
    its optimiser's (parameters numbered in the optimiser's order). Sharded by FSDP, they are
    gathered to the CPU of rank 0 (empty elsewhere); every process must call this."""
    if not _sharded(module):
        return module.state_dict(), optimizer.state_dict()
    weights = get_model_state_dict(module, options=_FULL)
    by_name = get_optimizer_state_dict(module, optimizer, options=_FULL)
    if not by_name:  # not rank 0
        return weights, {}
    order = [name for group in by_name["param_groups"] for name in group["params"]]
    number = {name: i for i, name in enumerate(order)}
    state = {number[name]: value for name, value in by_name["state"].items()}
    groups = [{**group, "params": [number[name] for name in group["params"]]} for group in by_name["param_groups"]]
    return weights, {"state": state, "param_groups": groups}


def load_full_state(module: nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any]) -> None:
    """Load what ``full_state`` returned (whole, on every process) into ``module`` and ``optimizer``,
    sharding it where FSDP shards the model. The weights must match (``checkpoint.load_weights``'s checks)."""
    if not _sharded(module):
        module.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
        return
    set_model_state_dict(module, weights, options=StateDictOptions(full_state_dict=True))
    names = {id(p): name for name, p in module.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {
        "state": {order[i]: value for i, value in optimizer_state["state"].items()},
        "param_groups": [{**group, "params": [order[i] for i in group["params"]]}
                         for group in optimizer_state["param_groups"]],
    }
    set_optimizer_state_dict(module, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
