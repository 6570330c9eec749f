"""The official XViT (1adrianb/video-transformers, PySlowFast format) -> tubelet ``xvit_*``.

The official ``XVIT`` model (``slowfast/models/video_model_builder.py``) holds a timm ViT as
``base_model`` (``transformers/vit.py``: ``patch_embed.proj``, ``cls_token``, ``pos_embed [1, 1 +
H*W, D]``, ``temp_embed [1, T, 1, D]``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp}``,
``norm``; its ``head`` is a Dropout when ``MODEL.DROPOUT_RATE > 0``, as in every released config)
and the temporal attention aggregation ``consensus`` (``head_helper.VitHead``: ``cls_token``,
``temporal_encoder.N`` blocks without q/k/v bias, ``mlp_head`` = LayerNorm, Linear, GELU,
Dropout, Linear). ``new_fc`` is built with the dropout but is not on the forward path of the
``vit`` consensus: the converter names it as unused (``UNUSED``) and drops it.

``convert_xvit_official`` is the pure ``state_dict -> state_dict`` function over ``KEY_TABLE``;
``load_xvit_official(path, temporal_shift_div=4)`` loads the registered XViT it fills. The shift
is not in the weights: ``SHIFT_DIV`` is 4 in the official SSv2 config and 8 in the Kinetics
ones, and it applies in every block in both (``LOCATIONS_LIST`` covers all 12).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from tubelet.convert.keys import Rule, load_into_registered, ranked_architectures, read_model_state, rename, square_grid

SOURCE = "official XViT"
BACKBONE = r"base_model\.blocks\.(\d+)\."
HEAD_BLOCK = r"consensus\.temporal_encoder\.(\d+)\."
KEY_TABLE: list[Rule] = [
    (r"base_model\.patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"base_model\.cls_token", "cls_token"),  # [1, 1, D] -> [1, 1, 1, D]
    (r"base_model\.pos_embed", "pos_embed.spatial"),
    (r"base_model\.temp_embed", "pos_embed.temporal"),  # [1, T, 1, D] -> [1, T, D]
    (BACKBONE + r"norm1\.(weight|bias)", r"blocks.\1.attn.steps.0.norm.\2"),
    (BACKBONE + r"attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.steps.0.attn.\2.\3"),
    (BACKBONE + r"norm2\.(weight|bias)", r"blocks.\1.mlp_norm.\2"),
    (BACKBONE + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"base_model\.norm\.(weight|bias)", r"norm.\1"),
    (r"consensus\.cls_token", "pool.cls_token"),
    (HEAD_BLOCK + r"norm1\.(weight|bias)", r"pool.blocks.\1.attn.steps.0.norm.\2"),
    (HEAD_BLOCK + r"attn\.(qkv|proj)\.(weight|bias)", r"pool.blocks.\1.attn.steps.0.attn.\2.\3"),
    (HEAD_BLOCK + r"norm2\.(weight|bias)", r"pool.blocks.\1.mlp_norm.\2"),
    (HEAD_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"pool.blocks.\1.mlp.\2.\3"),
    (r"consensus\.mlp_head\.0\.(weight|bias)", r"pool.norm.\1"),
    (r"consensus\.mlp_head\.1\.(weight|bias)", r"pool.fc.\1"),
    (r"consensus\.mlp_head\.4\.(weight|bias)", r"head.\1"),
]
UNUSED = ("new_fc.weight", "new_fc.bias")


def convert_xvit_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``XVIT`` state dict -> tubelet ``FrameTokenTransformer`` state dict."""
    out = rename({k: v for k, v in state.items() if k not in UNUSED}, KEY_TABLE, SOURCE)
    if "cls_token" in out:
        out["cls_token"] = out["cls_token"].reshape(1, 1, 1, -1)
    if "pos_embed.temporal" in out:
        out["pos_embed.temporal"] = out["pos_embed.temporal"].flatten(2)
    if "patch_embed.proj.weight" in out:
        out["patch_embed.proj.weight"] = out["patch_embed.proj.weight"].unsqueeze(2)  # [D, C, 1, P, P]
    return out


def load_xvit_official(path: str | os.PathLike, temporal_shift_div: int = 4) -> nn.Module:
    """The tubelet model of an official XViT checkpoint; ``temporal_shift_div`` is its config's
    ``SHIFT_DIV`` (4: SSv2, 8: Kinetics). Classes come from ``consensus.mlp_head.4``, frames from
    ``temp_embed``, the size from ``pos_embed``, the aggregation's depth from its blocks."""
    state = read_model_state(path)
    for key in ("base_model.patch_embed.proj.weight", "base_model.pos_embed", "base_model.temp_embed", "consensus.mlp_head.4.weight"):
        if key not in state:
            raise ValueError(f"{path} has no {key}: not a checkpoint of the official XViT with the vit consensus")
    patch = state["base_model.patch_embed.proj.weight"].shape[-1]
    args = dict(num_classes=state["consensus.mlp_head.4.weight"].shape[0], num_frames=state["base_model.temp_embed"].shape[1],
                patch_size=patch, img_size=square_grid(state["base_model.pos_embed"], 1, "base_model.pos_embed") * patch,
                attention_options={"temporal_shift_div": temporal_shift_div},
                head_options={"depth": len({k.split(".")[2] for k in state if k.startswith("consensus.temporal_encoder.")}) or 1})
    if "consensus.mlp_head.1.weight" in state:
        args["head_options"]["mlp_dim"] = state["consensus.mlp_head.1.weight"].shape[0]
    converted = convert_xvit_official(state)
    candidates = [(name, args) for name in ranked_architectures("xvit_", args)]
    return load_into_registered(converted, candidates, f"{path} ({SOURCE})")
