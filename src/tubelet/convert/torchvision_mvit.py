"""torchvision's MViTv2 (``torchvision.models.video.mvit_v2_s``) -> tubelet ``MViT``.

``convert_torchvision_mvit`` is a pure ``state_dict -> state_dict`` function over the names
torchvision gives its parameters (``KEY_TABLE``); ``load_torchvision_mvit(path)`` reads a
``.pth`` or ``.safetensors`` state dict (torchvision is not needed), finds the registered MViTv2
whose every parameter it fills (its frames and size read from the relative-position tables, its
classes from the head) and loads it. The two networks compute the same function: torchvision's
blocks, poolings, relative positions and residual pooling are tubelet's, key for key.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping

import torch
from torch import nn

from tubelet.convert.keys import Rule, load_into_registered, read_weight_file, rename
from tubelet.models.registry import get_entry, list_models

SOURCE = "torchvision MViT"
BLOCK = r"blocks\.(\d+)\."
KEY_TABLE: list[Rule] = [
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"pos_encoding\.class_token", "cls_token"),  # [D] -> [1, 1, D]
    (BLOCK + r"norm(1|2)\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (BLOCK + r"attn\.qkv\.(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (BLOCK + r"attn\.project\.0\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (BLOCK + r"attn\.pool_([qkv])\.pool\.weight", r"blocks.\1.attn.pool_\2.weight"),
    (BLOCK + r"attn\.pool_([qkv])\.norm_act\.0\.(weight|bias)", r"blocks.\1.attn.norm_\2.\3"),
    (BLOCK + r"attn\.rel_pos_([thw])", r"blocks.\1.attn.rel_pos_\2"),
    (BLOCK + r"mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (BLOCK + r"mlp\.3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (BLOCK + r"project\.(weight|bias)", r"blocks.\1.proj.\2"),
    (r"norm\.(weight|bias)", r"norm.\1"),
    (r"head\.1\.(weight|bias)", r"head.\1"),
]


def convert_torchvision_mvit(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``MViT`` state dict (``rel_pos_embed=True``, as in ``mvit_v2_s``) -> tubelet
    ``MViT`` state dict. A name outside ``KEY_TABLE`` (torchvision's absolute position tables of
    MViTv1, say) is a ValueError naming it."""
    out = rename(state, KEY_TABLE, SOURCE)
    if "cls_token" in out:
        out["cls_token"] = out["cls_token"].reshape(1, 1, -1)
    return out


def mvit_candidates(state: Mapping[str, torch.Tensor]) -> list[tuple[str, dict]]:
    """The registered MViTv2 architectures, each with the classes, channels, frames and size that
    a converted ``state`` implies: classes and channels from the head and the stem, the
    constructed token grid from block 0's relative-position tables (``2 * T' - 1`` and
    ``2 * H' - 1`` rows: block 0 pools no queries) times the stem's stride."""
    for key in ("head.weight", "patch_embed.proj.weight"):
        if key not in state:
            raise ValueError(f"{SOURCE} checkpoint has no counterpart of tubelet's {key}: not an MViT classifier")
    args = dict(num_classes=state["head.weight"].shape[0], in_chans=state["patch_embed.proj.weight"].shape[1])
    candidates = []
    for name in list_models("mvitv2"):
        entry = get_entry(name)
        found = dict(args)
        if "blocks.0.attn.rel_pos_t" in state and "blocks.0.attn.rel_pos_h" in state:
            stride = entry.defaults.get("patch_stride", inspect.signature(entry.cls).parameters["patch_stride"].default)
            found["num_frames"] = (state["blocks.0.attn.rel_pos_t"].shape[0] + 1) // 2 * stride[0]
            found["img_size"] = (state["blocks.0.attn.rel_pos_h"].shape[0] + 1) // 2 * stride[1]
        candidates.append((name, found))
    return candidates


def load_torchvision_mvit(path: str | os.PathLike) -> nn.Module:
    """The tubelet model of a torchvision MViTv2 state dict file (``.pth`` or ``.safetensors``)."""
    state = read_weight_file(path)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of names to tensors)")
    converted = convert_torchvision_mvit(state)
    return load_into_registered(converted, mvit_candidates(converted), f"{path} ({SOURCE})")
