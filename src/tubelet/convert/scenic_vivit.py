"""scenic's ViViT (google-research/scenic, ``scenic/projects/vivit/model.py``) -> tubelet ViViT.

A scenic checkpoint is a Flax parameter tree; flattened to ``.npz`` its arrays are named by their
path joined with ``/`` (``Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel``; a ``params/``
root is allowed). Layouts are converted by ``tubelet.convert.flax_layout``. The four models:

| scenic ``attention_config.type`` | tree | tubelet |
| --- | --- | --- |
| ``spacetime`` (model 1) | ``Transformer/encoderblock_N/{LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0}`` | ``vivit_joint_*`` |
| ``factorized_encoder`` (model 2) | ``SpatialTransformer/...``, ``TemporalTransformer/...``, ``cls_SpatialTransformer``, ``cls_TemporalTransformer`` | ``vivit_factorised_encoder_*`` |
| ``factorized_self_attention_block`` (model 3) | ``encoderblock_N/{LayerNorm_space, MultiHeadDotProductAttention_space, LayerNorm_time, ..._time, LayerNorm_mlp, MlpBlock}`` | ``vivit_factorised_self_*`` |
| ``factorized_dot_product_attention`` (model 4) | the names of model 1 | ``vivit_factorised_dot_*`` |

and ``embedding/kernel [t, h, w, C, D]``, ``cls`` (classifier ``token``), ``posembed_input``,
``encoder_norm``, ``output_projection``. Models 1 and 4 have the same names, so model 4 is asked
for (``attention_type``). What the converted models take from scenic's code, not from the paper:
the tanh GELU (``flax.linen.gelu``), LayerNorm eps 1e-6, global average pooling of the
normalised tokens (``head="norm_mean"``, classifier ``gap``), the class token after
``encoder_norm`` (classifier ``token``), model 2's stochastic-depth ramp per encoder, model 3's
``space_time`` order (space, then time). Model 4 gives the first half of the heads to time and
the second to space; tubelet the reverse, so the halves of q, k, v and of the output projection's
inputs are swapped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from tubelet.convert.flax_layout import read_npz, strip_tree_prefix, to_torch_layout
from tubelet.convert.keys import Rule, closest_architecture, load_into_registered, rename, square_grid

SOURCE = "scenic ViViT"
ATTENTION_TYPES = {
    "spacetime": "joint", "factorized_encoder": "factorised_encoder",
    "factorized_self_attention_block": "factorised_self", "factorized_dot_product_attention": "factorised_dot",
}


def _block_rules(encoder: str, target: str, kind: str) -> list[Rule]:
    """``encoder/encoderblock_N/...`` -> tubelet block ``target.N`` of the tubelet ``kind``."""
    block = rf"{encoder}/encoderblock_(\d+)/"
    mlp = [
        (block + r"MlpBlock(?:_\d)?/Dense_0/(kernel|bias)", rf"{target}.\1.mlp.fc1.\2"),
        (block + r"MlpBlock(?:_\d)?/Dense_1/(kernel|bias)", rf"{target}.\1.mlp.fc2.\2"),
    ]
    if kind == "factorised_self":
        steps = []
        for axis, step in (("space", 0), ("time", 1)):
            steps += [
                (block + rf"LayerNorm_{axis}/(scale|bias)", rf"{target}.\1.attn.steps.{step}.norm.\2"),
                (block + rf"MultiHeadDotProductAttention_{axis}/(query|key|value)/(kernel|bias)", rf"{target}.\1.attn.steps.{step}.attn.\2.\3"),
                (block + rf"MultiHeadDotProductAttention_{axis}/out/(kernel|bias)", rf"{target}.\1.attn.steps.{step}.attn.proj.\2"),
            ]
        return steps + [(block + r"LayerNorm_mlp/(scale|bias)", rf"{target}.\1.mlp_norm.\2")] + mlp
    mixer = "attn" if kind == "factorised_dot" else "attn.steps.0"
    return [
        (block + r"LayerNorm_0/(scale|bias)", rf"{target}.\1.{mixer}.norm.\2"),
        (block + r"MultiHeadDotProductAttention_\d/(query|key|value)/(kernel|bias)", rf"{target}.\1.{mixer}.attn.\2.\3"),
        (block + r"MultiHeadDotProductAttention_\d/out/(kernel|bias)", rf"{target}.\1.{mixer}.attn.proj.\2"),
        (block + r"LayerNorm_1/(scale|bias)", rf"{target}.\1.mlp_norm.\2"),
    ] + mlp


def key_table(kind: str) -> list[Rule]:
    """scenic names -> tubelet module paths (Flax's ``kernel`` and ``scale`` kept, for
    ``to_torch_layout``) for a tubelet ViViT ``kind``."""
    common = [(r"embedding/(kernel|bias)", r"patch_embed.proj.\1"), (r"output_projection/(kernel|bias)", r"head.\1")]
    if kind == "factorised_encoder":
        return common + [
            (r"cls_SpatialTransformer", "cls_token"),
            (r"cls_TemporalTransformer", "temporal_cls_token"),
            (r"SpatialTransformer/posembed_input/pos_embedding", "pos_embed.weight"),
            (r"TemporalTransformer/posembed_input/pos_embedding", "temporal_pos_embed.weight"),
            (r"SpatialTransformer/encoder_norm/(scale|bias)", r"spatial_norm.\1"),
            (r"TemporalTransformer/encoder_norm/(scale|bias)", r"norm.\1"),
            *_block_rules("SpatialTransformer", "blocks", "joint"),
            *_block_rules("TemporalTransformer", "temporal_blocks", "joint"),
        ]
    return common + [
        (r"cls", "cls_token"),
        (r"Transformer/posembed_input/pos_embedding", "pos_embed.weight"),
        (r"Transformer/encoder_norm/(scale|bias)", r"norm.\1"),
        *_block_rules("Transformer", "blocks", kind),
    ]


def _swap_head_halves(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model 4: scenic's first half of the heads attends over time, tubelet's over space. Flax
    per-head arrays (q/k/v kernels ``[D, heads, d]``, biases ``[heads, d]``, out kernel
    ``[heads, d, D]``) are rolled by half the heads."""
    out = {}
    for name, value in state.items():
        if name.startswith("blocks.") and ".attn.attn." in name and value.ndim >= 2:
            axis = 1 if name.endswith("kernel") and not name.endswith("proj.kernel") else 0
            value = torch.roll(value, value.shape[axis] // 2, dims=axis)
        out[name] = value
    return out


def convert_scenic_vivit(arrays: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """A scenic ViViT tree (``.npz`` names) -> the state dict of tubelet's ViViT ``kind``
    (``joint``, ``factorised_encoder``, ``factorised_self``, ``factorised_dot``)."""
    if kind not in ATTENTION_TYPES.values():
        raise ValueError(f"unknown ViViT kind {kind!r}; expected one of {sorted(ATTENTION_TYPES.values())}")
    renamed = rename(strip_tree_prefix(dict(arrays)), key_table(kind), SOURCE)
    if kind == "factorised_dot":
        renamed = _swap_head_halves(renamed)
    return to_torch_layout(renamed)


def scenic_kind(arrays: Mapping[str, torch.Tensor], attention_type: str | None) -> str:
    """The tubelet ViViT kind of a tree: model 2 and 3 by their names, 1 unless
    ``attention_type="factorized_dot_product_attention"`` says model 4."""
    if attention_type is not None:
        if attention_type not in ATTENTION_TYPES:
            raise ValueError(f"unknown scenic attention_type {attention_type!r}; expected one of {sorted(ATTENTION_TYPES)}")
        return ATTENTION_TYPES[attention_type]
    names = list(strip_tree_prefix(dict(arrays)))
    if any(name.startswith("SpatialTransformer/") for name in names):
        return "factorised_encoder"
    return "factorised_self" if any("MultiHeadDotProductAttention_space" in name for name in names) else "joint"


def model_arguments(arrays: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], kind: str, img_size: int) -> dict:
    """Constructor arguments implied by a tree (``arrays``, for the head count of its per-head
    kernels) and its conversion ``state``. The joint positional table holds ``T' * H' * W'``
    rows, so the frame count is read at ``img_size`` (scenic's trees do not record the input)."""
    for key in ("patch_embed.proj.weight", "head.weight", "pos_embed.weight", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise ValueError(f"{SOURCE} tree has no counterpart of tubelet's {key}: not a ViViT classifier")
    dim, channels, tubelet, patch = state["patch_embed.proj.weight"].shape[:4]
    heads = next(value.shape[1] for name, value in arrays.items() if re.search(r"MultiHeadDotProductAttention_\w+/query/kernel$", name))
    args = dict(embed_dim=dim, in_chans=channels, tubelet_size=tubelet, patch_size=patch, num_heads=heads, act="gelu_tanh",
                num_classes=state["head.weight"].shape[0], depth=len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
                mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / dim)
    table = state["pos_embed.weight"]
    if kind == "factorised_encoder":
        if "cls_token" not in state or "temporal_cls_token" not in state:
            raise ValueError(f"{SOURCE}: a factorised encoder without class tokens (classifier 'gap') is not supported")
        frames = state["temporal_pos_embed.weight"].shape[1] - 1
        temporal_depth = len({k.split(".")[1] for k in state if k.startswith("temporal_blocks.")})
        return {**args, "img_size": square_grid(table, 1, "SpatialTransformer/posembed_input/pos_embedding") * patch,
                "num_frames": frames * tubelet, "temporal_depth": temporal_depth}
    prefix = 1 if "cls_token" in state else 0
    per_frame = (img_size // patch) ** 2
    if (table.shape[1] - prefix) % per_frame:
        raise ValueError(f"{SOURCE}: Transformer/posembed_input/pos_embedding {list(table.shape)} does not hold whole "
                         f"{img_size // patch}x{img_size // patch} frames at img_size={img_size}; pass the checkpoint's img_size")
    args.update(img_size=img_size, num_frames=(table.shape[1] - prefix) // per_frame * tubelet)
    if kind == "joint":
        return {**args, "class_token": bool(prefix), "head": "cls" if prefix else "norm_mean"}
    return {**args, "head": "norm_mean"}


def load_scenic_vivit(path: str | os.PathLike, attention_type: str | None = None, img_size: int = 224) -> nn.Module:
    """The tubelet model of a scenic ViViT tree saved as ``.npz``. ``attention_type`` is scenic's
    ``attention_config.type`` (needed for model 4 only); ``img_size`` the input it was trained at."""
    arrays = strip_tree_prefix(read_npz(path))
    kind = scenic_kind(arrays, attention_type)
    state = convert_scenic_vivit(arrays, kind)
    args = model_arguments(arrays, state, kind, img_size)
    name = closest_architecture(f"vivit_{kind}_", args)
    return load_into_registered(state, [(name, args)], f"{path} ({SOURCE}, {kind})")
