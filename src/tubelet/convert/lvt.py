"""The official linear video transformer (OpenNLPLab/Linear_VideoTransformer, PySlowFast format)
-> tubelet's LVT with the official architecture.

The official ``XVIT`` wrapper (``slowfast/models/video_model_builder.py``) holds
``LinearChangeVisionTransformer`` (``transformers/lvit_v2.py``) as ``base_model``: an overlapping
patch embedding ``patch_embed.{proj, norm}`` (a ``Conv2d`` of 16 px every 14 px, then a
LayerNorm), ``temp_embed [1, T, 1, D]`` and no spatial table, ``LinearBlock`` s
(``transformers/linear_block_v2.py``, ``divided_time_space``: ``temporal_norm1`` and
``temporal_attn`` first, then ``norm1`` and ``attn``, each attention with ``qkv``, ``proj`` and
its feature-fixation gate ``pgate``, or ``q_gate`` and ``k_gate`` with ``SHARE_GATE: False``;
``norm2`` and an MLP with a 3 x 3 depth-wise convolution ``mlp.dwconv.dwconv``), ``norm``, and a
Dropout as its head; then ``consensus`` (``head_helper.VVTHead``: the mean over frames, then
``mlp_head`` = LayerNorm, Linear, GELU, Dropout, Linear). ``new_fc`` is built but not on the
forward path (``UNUSED``).

Its tubelet form (``official_arguments``): ``patch_stride=14``, ``patch_norm=True``,
``pos_embed="temporal"``, ``mlp="dwconv"``, ``head="norm_mean_mlp"``, and the linear attention
with ``groupings=("tube", "frame")`` and the config's ``SHIFT_DIV`` (4 for SSv2).
``convert_lvt_official`` is the pure ``state_dict -> state_dict`` function over ``KEY_TABLE``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from tubelet.convert.keys import Rule, load_into_registered, ranked_architectures, read_model_state, rename

SOURCE = "official LVT"
BLOCK = r"base_model\.blocks\.(\d+)\."
KEY_TABLE: list[Rule] = [
    (r"base_model\.patch_embed\.(proj|norm)\.(weight|bias)", r"patch_embed.\1.\2"),
    (r"base_model\.temp_embed", "pos_embed.temporal"),  # [1, T, 1, D] -> [1, T, D]
    (BLOCK + r"temporal_norm1\.(weight|bias)", r"blocks.\1.attn.steps.0.norm.\2"),
    (BLOCK + r"temporal_attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.steps.0.attn.\2.\3"),
    (BLOCK + r"temporal_attn\.pgate\.(weight|bias)", r"blocks.\1.attn.steps.0.fixation.gate.\2"),
    (BLOCK + r"temporal_attn\.(q_gate|k_gate)\.(weight|bias)", r"blocks.\1.attn.steps.0.fixation.\2.\3"),
    (BLOCK + r"norm1\.(weight|bias)", r"blocks.\1.attn.steps.1.norm.\2"),
    (BLOCK + r"attn\.(qkv|proj)\.(weight|bias)", r"blocks.\1.attn.steps.1.attn.\2.\3"),
    (BLOCK + r"attn\.pgate\.(weight|bias)", r"blocks.\1.attn.steps.1.fixation.gate.\2"),
    (BLOCK + r"attn\.(q_gate|k_gate)\.(weight|bias)", r"blocks.\1.attn.steps.1.fixation.\2.\3"),
    (BLOCK + r"norm2\.(weight|bias)", r"blocks.\1.mlp_norm.\2"),
    (BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (BLOCK + r"mlp\.dwconv\.dwconv\.(weight|bias)", r"blocks.\1.mlp.dwconv.\2"),
    (r"base_model\.norm\.(weight|bias)", r"norm.\1"),
    (r"consensus\.mlp_head\.0\.(weight|bias)", r"pool.mlp_norm.\1"),
    (r"consensus\.mlp_head\.1\.(weight|bias)", r"pool.fc.\1"),
    (r"consensus\.mlp_head\.4\.(weight|bias)", r"head.\1"),
]
UNUSED = ("new_fc.weight", "new_fc.bias")


def official_arguments(temporal_shift_div: int = 4, fixation: str = "cooperative", fixation_shared: bool = True,
                       patch_stride: int = 14, mlp_dim: int | None = None) -> dict:
    """Constructor arguments of ``lvt_*`` for the official architecture (see the module docstring)."""
    return dict(
        patch_stride=patch_stride, patch_norm=True, pos_embed="temporal", mlp="dwconv", head="norm_mean_mlp",
        head_options={"mlp_dim": mlp_dim},
        attention_options={"groupings": ["tube", "frame"], "temporal_shift_div": temporal_shift_div, "fixation": fixation,
                           "fixation_shared": fixation_shared},
    )


def convert_lvt_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official LVT ``XVIT`` state dict -> tubelet state dict of the official architecture."""
    out = rename({k: v for k, v in state.items() if k not in UNUSED}, KEY_TABLE, SOURCE)
    if "patch_embed.proj.weight" in out:
        out["patch_embed.proj.weight"] = out["patch_embed.proj.weight"].unsqueeze(2)  # [D, C, 1, P, P]
    if "pos_embed.temporal" in out:
        out["pos_embed.temporal"] = out["pos_embed.temporal"].flatten(2)
    return out


def load_lvt_official(path: str | os.PathLike, temporal_shift_div: int = 4, img_size: int = 224, patch_stride: int = 14,
                      num_heads: int = 8) -> nn.Module:
    """The tubelet model of an official LVT checkpoint. Not in the weights, so given here:
    ``temporal_shift_div`` (its config's ``SHIFT_DIV``: 4 for SSv2, 8 for Kinetics), ``img_size``
    and ``patch_stride`` (the input and the patch stride it ran with) and, for a checkpoint
    without feature fixation (``USE_CGATE: False``), ``num_heads``; with fixation the heads come
    from the gate's width (one ``Linear(3 * head_dim, head_dim)`` shared by the heads)."""
    state = read_model_state(path)
    for key in ("base_model.patch_embed.proj.weight", "base_model.temp_embed", "base_model.blocks.0.mlp.fc1.weight", "consensus.mlp_head.4.weight"):
        if key not in state:
            raise ValueError(f"{path} has no {key}: not a checkpoint of the official LVT with the vit consensus")
    gates = [k for k in state if k.endswith(("attn.pgate.weight", "attn.q_gate.weight"))]
    dim = state["base_model.patch_embed.proj.weight"].shape[0]
    fixation = dict(fixation="cooperative" if gates else "none", fixation_shared=not any("q_gate" in k for k in gates))
    args = dict(
        official_arguments(temporal_shift_div, patch_stride=patch_stride, mlp_dim=state["consensus.mlp_head.1.weight"].shape[0]
                           if "consensus.mlp_head.1.weight" in state else None, **fixation),
        num_classes=state["consensus.mlp_head.4.weight"].shape[0], num_frames=state["base_model.temp_embed"].shape[1], img_size=img_size,
        embed_dim=dim, num_heads=dim // state[gates[0]].shape[0] if gates else num_heads,
        patch_size=state["base_model.patch_embed.proj.weight"].shape[-1],
        depth=len({k.split(".")[2] for k in state if k.startswith("base_model.blocks.")}),
        mlp_ratio=state["base_model.blocks.0.mlp.fc1.weight"].shape[0] / dim,
    )
    candidates = [(name, args) for name in ranked_architectures("lvt_", args)]
    return load_into_registered(convert_lvt_official(state), candidates, f"{path} ({SOURCE})")
