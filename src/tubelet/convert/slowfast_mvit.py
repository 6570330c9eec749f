"""PySlowFast's MViTv2 (``slowfast/models/video_model_builder.py``, ``MViT``) -> tubelet ``MViT``.

``convert_slowfast_mvit`` is a pure ``state_dict -> state_dict`` function over PySlowFast's
parameter names (``KEY_TABLE``; the configurations of the MViTv2 model zoo: conv pooling,
relative positions, residual pooling, ``DIM_MUL_IN_ATT``, class token, no absolute positions).
``load_slowfast_mvit(path)`` reads a ``.pyth`` checkpoint (its ``model_state``) and loads the
registered MViTv2 that it fills exactly. In evaluation mode PySlowFast's head applies a softmax;
the tubelet model returns the logits before it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from tubelet.convert.keys import Rule, load_into_registered, read_weight_file, rename
from tubelet.convert.torchvision_mvit import mvit_candidates

SOURCE = "PySlowFast MViT"
BLOCK = r"blocks\.(\d+)\."
KEY_TABLE: list[Rule] = [
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"cls_token", "cls_token"),
    (BLOCK + r"(norm1|norm2|proj)\.(weight|bias)", r"blocks.\1.\2.\3"),
    (BLOCK + r"attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (BLOCK + r"attn\.pool_([qkv])\.weight", r"blocks.\1.attn.pool_\2.weight"),
    (BLOCK + r"attn\.norm_([qkv])\.(weight|bias)", r"blocks.\1.attn.norm_\2.\3"),
    (BLOCK + r"attn\.rel_pos_([thw])", r"blocks.\1.attn.rel_pos_\2"),
    (BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"norm.\1"),
    (r"head\.projection\.(weight|bias)", r"head.\1"),
]


def fuse_separate_qkv(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``SEPARATE_QKV: True`` checkpoints keep ``attn.q``, ``attn.k``, ``attn.v``: concatenated in
    that order into ``attn.qkv`` (``[3 * D', D]``), the layout of the fused projection."""
    out = dict(state)
    for key in [k for k in state if k.endswith(".attn.q.weight")]:
        base = key[: -len("q.weight")]
        for kind in ("weight", "bias"):
            names = [f"{base}{part}.{kind}" for part in "qkv"]
            present = [name in out for name in names]
            if any(present) and not all(present):
                raise ValueError(f"{SOURCE} checkpoint has {base}q.{kind} but not all of {', '.join(names)}")
            if all(present):
                out[f"{base}qkv.{kind}"] = torch.cat([out.pop(name) for name in names])
    return out


def convert_slowfast_mvit(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PySlowFast ``MViT`` ``model_state`` -> tubelet ``MViT`` state dict; a name outside
    ``KEY_TABLE`` (absolute positions, layer scale, a reversible backbone) is a ValueError naming it."""
    return rename(fuse_separate_qkv(state), KEY_TABLE, SOURCE)


def load_slowfast_mvit(path: str | os.PathLike) -> nn.Module:
    """The tubelet model of a PySlowFast MViTv2 checkpoint (``.pyth``: a dict with ``model_state``)."""
    checkpoint = read_weight_file(path)
    if not isinstance(checkpoint, Mapping) or "model_state" not in checkpoint:
        raise ValueError(f"{path} has no 'model_state': not a PySlowFast checkpoint")
    converted = convert_slowfast_mvit(checkpoint["model_state"])
    return load_into_registered(converted, mvit_candidates(converted), f"{path} ({SOURCE})")
