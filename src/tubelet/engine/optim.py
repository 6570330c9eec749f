"""Optimisers with weight-decay exclusions and layer-wise learning-rate decay."""

from __future__ import annotations

import torch
from torch import nn

from tubelet.engine.config import TrainConfig


def param_groups(model: nn.Module, *, weight_decay: float, layer_decay: float) -> list[dict]:
    """Split trainable parameters into groups by (layer, decayed or not).

    No weight decay for parameters with ``ndim <= 1`` (norm weights, biases) and for the names in
    ``model.no_weight_decay()`` (class token, positional embeddings). With ``layer_decay < 1`` each
    group's lr is scaled by ``layer_decay ** (num_layers + 1 - model.layer_id(name))`` (BEiT's
    layer-wise decay: the head keeps the full lr, embeddings get the smallest); the scale is stored
    as the group's ``lr_scale``.
    """
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    if layer_decay != 1.0 and not hasattr(model, "layer_id"):
        raise ValueError(f"layer_decay={layer_decay} needs a model with layer_id(); {type(model).__name__} has none")
    top = model.num_layers + 1 if layer_decay != 1.0 else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1 and name not in skip
        layer = model.layer_id(name) if layer_decay != 1.0 else 0
        group = groups.setdefault(
            (layer, decay),
            {"params": [], "names": [], "weight_decay": weight_decay if decay else 0.0,
             "lr_scale": layer_decay ** (top - layer)},
        )
        group["params"].append(param)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over ``param_groups``; each group's lr is ``config.lr * lr_scale``."""
    groups = param_groups(model, weight_decay=config.weight_decay, layer_decay=config.layer_decay)
    for group in groups:
        group["lr"] = config.lr * group["lr_scale"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
    raise ValueError(f"train.optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")
