"""Checkpoints in foreign layouts, written by hand from the official code's parameter names and
shapes (none of those libraries runs here): timm's image ViT and Google's ``.npz`` tree of it."""

from __future__ import annotations

import numpy as np
import torch


def random_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of ``shapes`` (LayerNorm-like 1-D weights near 1, so that they are not zero)."""
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * 0.05 + (1.0 if name.endswith("norm.weight") else 0.0) for name, shape in shapes.items()}


def timm_vit_shapes(dim: int = 64, depth: int = 2, patch: int = 8, grid: int = 4, classes: int = 10,
                    class_token: bool = True, pre_logits: bool = False) -> dict[str, list[int]]:
    """timm ``VisionTransformer`` (``vision_transformer.py``): names and shapes of its parameters."""
    shapes = {"patch_embed.proj.weight": [dim, 3, patch, patch], "patch_embed.proj.bias": [dim],
              "pos_embed": [1, grid * grid + (1 if class_token else 0), dim]}
    if class_token:
        shapes["cls_token"] = [1, 1, dim]
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": [dim], b + "norm1.bias": [dim], b + "attn.qkv.weight": [3 * dim, dim],
                       b + "attn.qkv.bias": [3 * dim], b + "attn.proj.weight": [dim, dim], b + "attn.proj.bias": [dim],
                       b + "norm2.weight": [dim], b + "norm2.bias": [dim], b + "mlp.fc1.weight": [4 * dim, dim],
                       b + "mlp.fc1.bias": [4 * dim], b + "mlp.fc2.weight": [dim, 4 * dim], b + "mlp.fc2.bias": [dim]})
    shapes.update({"norm.weight": [dim], "norm.bias": [dim], "head.weight": [classes, dim], "head.bias": [classes]})
    if pre_logits:
        shapes.update({"pre_logits.fc.weight": [dim, dim], "pre_logits.fc.bias": [dim]})
    return shapes


def google_vit_npz(state: dict[str, torch.Tensor], heads: int) -> dict[str, np.ndarray]:
    """The same weights as Google's ViT releases name and lay them out (``vit_jax`` ``.npz``:
    Flax kernels ``[in, out]``, per-head attention kernels, ``scale`` for LayerNorm weights)."""
    out = {"embedding/kernel": state["patch_embed.proj.weight"].permute(2, 3, 1, 0), "embedding/bias": state["patch_embed.proj.bias"],
           "cls": state["cls_token"], "Transformer/posembed_input/pos_embedding": state["pos_embed"],
           "Transformer/encoder_norm/scale": state["norm.weight"], "Transformer/encoder_norm/bias": state["norm.bias"],
           "head/kernel": state["head.weight"].t(), "head/bias": state["head.bias"]}
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        dim = state[src + "norm1.weight"].shape[0]
        for j, part in enumerate(("query", "key", "value")):
            weight = state[src + "attn.qkv.weight"][j * dim:(j + 1) * dim]  # [D_out, D_in]
            out[dst + f"MultiHeadDotProductAttention_1/{part}/kernel"] = weight.t().reshape(dim, heads, dim // heads)
            out[dst + f"MultiHeadDotProductAttention_1/{part}/bias"] = state[src + "attn.qkv.bias"][j * dim:(j + 1) * dim].reshape(heads, -1)
        out[dst + "MultiHeadDotProductAttention_1/out/kernel"] = state[src + "attn.proj.weight"].t().reshape(heads, dim // heads, dim)
        out[dst + "MultiHeadDotProductAttention_1/out/bias"] = state[src + "attn.proj.bias"]
        for flax, timm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[dst + f"{flax}/scale"], out[dst + f"{flax}/bias"] = state[src + f"{timm}.weight"], state[src + f"{timm}.bias"]
        for k, fc in enumerate(("fc1", "fc2")):
            out[dst + f"MlpBlock_3/Dense_{k}/kernel"] = state[src + f"mlp.{fc}.weight"].t()
            out[dst + f"MlpBlock_3/Dense_{k}/bias"] = state[src + f"mlp.{fc}.bias"]
    return {name: value.numpy() for name, value in out.items()}


def vit_block_shapes(prefix: str, dim: int, qkv_bias: bool = True, mlp: int | None = None) -> dict[str, list[int]]:
    """One timm-style pre-norm block (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1/fc2``),
    the block of TimeSformer's, XViT's and timm's code."""
    mlp = mlp or 4 * dim
    shapes = {prefix + "norm1.weight": [dim], prefix + "norm1.bias": [dim], prefix + "attn.qkv.weight": [3 * dim, dim],
              prefix + "attn.proj.weight": [dim, dim], prefix + "attn.proj.bias": [dim], prefix + "norm2.weight": [dim],
              prefix + "norm2.bias": [dim], prefix + "mlp.fc1.weight": [mlp, dim], prefix + "mlp.fc1.bias": [mlp],
              prefix + "mlp.fc2.weight": [dim, mlp], prefix + "mlp.fc2.bias": [dim]}
    if qkv_bias:
        shapes[prefix + "attn.qkv.bias"] = [3 * dim]
    return shapes


def timesformer_official_shapes(scheme: str, dim: int = 64, depth: int = 2, patch: int = 8, grid: int = 4, frames: int = 8,
                                classes: int = 5) -> dict[str, list[int]]:
    """facebookresearch/TimeSformer ``VisionTransformer`` (``timesformer/models/vit.py``) for
    ``attention_type`` divided_space_time / joint_space_time / space_only."""
    shapes = {"patch_embed.proj.weight": [dim, 3, patch, patch], "patch_embed.proj.bias": [dim], "cls_token": [1, 1, dim],
              "pos_embed": [1, grid * grid + 1, dim], "norm.weight": [dim], "norm.bias": [dim],
              "head.weight": [classes, dim], "head.bias": [classes]}
    if scheme != "space":
        shapes["time_embed"] = [1, frames, dim]
    for i in range(depth):
        shapes.update(vit_block_shapes(f"blocks.{i}.", dim))
        if scheme == "divided":
            b = f"blocks.{i}."
            shapes.update({b + "temporal_norm1.weight": [dim], b + "temporal_norm1.bias": [dim],
                           b + "temporal_attn.qkv.weight": [3 * dim, dim], b + "temporal_attn.qkv.bias": [3 * dim],
                           b + "temporal_attn.proj.weight": [dim, dim], b + "temporal_attn.proj.bias": [dim],
                           b + "temporal_fc.weight": [dim, dim], b + "temporal_fc.bias": [dim]})
    return shapes


def xvit_official_shapes(dim: int = 64, depth: int = 2, patch: int = 8, grid: int = 4, frames: int = 8, classes: int = 5,
                         head_blocks: int = 1) -> dict[str, list[int]]:
    """1adrianb/video-transformers ``XVIT`` with ``CONSENSUS_TYPE: vit`` and ``MODEL.DROPOUT_RATE``
    > 0: ``base_model`` (timm ViT, ``temp_embed``; its head a Dropout), ``new_fc``, ``consensus``
    (``VitHead``: blocks without q/k/v bias, ``mlp_head`` LayerNorm, Linear, GELU, Dropout, Linear)."""
    shapes = {"base_model.patch_embed.proj.weight": [dim, 3, patch, patch], "base_model.patch_embed.proj.bias": [dim],
              "base_model.cls_token": [1, 1, dim], "base_model.pos_embed": [1, grid * grid + 1, dim],
              "base_model.temp_embed": [1, frames, 1, dim], "base_model.norm.weight": [dim], "base_model.norm.bias": [dim],
              "new_fc.weight": [classes, dim], "new_fc.bias": [classes], "consensus.cls_token": [1, 1, dim],
              "consensus.mlp_head.0.weight": [dim], "consensus.mlp_head.0.bias": [dim],
              "consensus.mlp_head.1.weight": [dim, dim], "consensus.mlp_head.1.bias": [dim],
              "consensus.mlp_head.4.weight": [classes, dim], "consensus.mlp_head.4.bias": [classes]}
    for i in range(depth):
        shapes.update(vit_block_shapes(f"base_model.blocks.{i}.", dim))
    for i in range(head_blocks):
        shapes.update(vit_block_shapes(f"consensus.temporal_encoder.{i}.", dim, qkv_bias=False))
    return shapes


def flax_mha_shapes(prefix: str, dim: int, heads: int) -> dict[str, list[int]]:
    """``flax.linen.MultiHeadDotProductAttention``: per-head kernels and biases."""
    shapes = {f"{prefix}{part}/kernel": [dim, heads, dim // heads] for part in ("query", "key", "value")}
    shapes.update({f"{prefix}{part}/bias": [heads, dim // heads] for part in ("query", "key", "value")})
    return {**shapes, f"{prefix}out/kernel": [heads, dim // heads, dim], f"{prefix}out/bias": [dim]}


def scenic_encoder_shapes(encoder: str, depth: int, dim: int, heads: int, tokens: int, factorised_self: bool = False) -> dict[str, list[int]]:
    """scenic ``Encoder`` (``scenic/projects/vivit/model.py``): ``posembed_input``, ``encoderblock_N``
    (``EncoderBlock`` or ``EncoderFactorizedSelfAttentionBlock``), ``encoder_norm``."""
    shapes = {f"{encoder}/posembed_input/pos_embedding": [1, tokens, dim], f"{encoder}/encoder_norm/scale": [dim],
              f"{encoder}/encoder_norm/bias": [dim]}
    for i in range(depth):
        b = f"{encoder}/encoderblock_{i}/"
        norms = ("LayerNorm_space", "LayerNorm_time", "LayerNorm_mlp") if factorised_self else ("LayerNorm_0", "LayerNorm_1")
        for norm in norms:
            shapes.update({f"{b}{norm}/scale": [dim], f"{b}{norm}/bias": [dim]})
        for mha in (("MultiHeadDotProductAttention_space", "MultiHeadDotProductAttention_time") if factorised_self
                    else ("MultiHeadDotProductAttention_0",)):
            shapes.update(flax_mha_shapes(f"{b}{mha}/", dim, heads))
        mlp = f"{b}MlpBlock/" if factorised_self else f"{b}MlpBlock_0/"
        shapes.update({mlp + "Dense_0/kernel": [dim, 4 * dim], mlp + "Dense_0/bias": [4 * dim],
                       mlp + "Dense_1/kernel": [4 * dim, dim], mlp + "Dense_1/bias": [dim]})
    return shapes


def scenic_vivit_shapes(kind: str, dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 8, tubelet: int = 2,
                        grid: int = 4, frames: int = 8, classes: int = 5, temporal_depth: int = 2) -> dict[str, list[int]]:
    """scenic ``ViViT`` (``kind``: spacetime with classifier token, factorized_self_attention_block
    and factorized_dot_product_attention with gap) or ``SpaceTimeViViT`` (factorized_encoder, token)."""
    shapes = {"embedding/kernel": [tubelet, patch, patch, 3, dim], "embedding/bias": [dim],
              "output_projection/kernel": [dim, classes], "output_projection/bias": [classes]}
    slices = frames // tubelet
    if kind == "factorized_encoder":
        shapes.update({"cls_SpatialTransformer": [1, 1, dim], "cls_TemporalTransformer": [1, 1, dim]})
        shapes.update(scenic_encoder_shapes("SpatialTransformer", depth, dim, heads, 1 + grid * grid))
        return {**shapes, **scenic_encoder_shapes("TemporalTransformer", temporal_depth, dim, heads, 1 + slices)}
    token = kind == "spacetime"
    if token:
        shapes["cls"] = [1, 1, dim]
    return {**shapes, **scenic_encoder_shapes("Transformer", depth, dim, heads, int(token) + slices * grid * grid,
                                              factorised_self=kind == "factorized_self_attention_block")}


def lvt_official_shapes(dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 8, frames: int = 4, classes: int = 5,
                        share_gate: bool = True) -> dict[str, list[int]]:
    """OpenNLPLab/Linear_VideoTransformer ``XVIT`` with ``lvit_v2`` (``OverlapPatchEmbed``,
    ``temp_embed``, ``LinearBlock`` ``divided_time_space`` with ``USE_CGATE``, the ``DWConv`` MLP),
    ``new_fc`` and ``VVTHead`` (``mlp_head`` LayerNorm, Linear, GELU, Dropout, Linear)."""
    hd, hidden = dim // heads, 4 * dim
    shapes = {"base_model.patch_embed.proj.weight": [dim, 3, patch, patch], "base_model.patch_embed.proj.bias": [dim],
              "base_model.patch_embed.norm.weight": [dim], "base_model.patch_embed.norm.bias": [dim],
              "base_model.temp_embed": [1, frames, 1, dim], "base_model.norm.weight": [dim], "base_model.norm.bias": [dim],
              "new_fc.weight": [classes, dim], "new_fc.bias": [classes],
              "consensus.mlp_head.0.weight": [dim], "consensus.mlp_head.0.bias": [dim],
              "consensus.mlp_head.1.weight": [dim, dim], "consensus.mlp_head.1.bias": [dim],
              "consensus.mlp_head.4.weight": [classes, dim], "consensus.mlp_head.4.bias": [classes]}
    for i in range(depth):
        b = f"base_model.blocks.{i}."
        for norm, attn in (("norm1", "attn"), ("temporal_norm1", "temporal_attn")):
            shapes.update({f"{b}{norm}.weight": [dim], f"{b}{norm}.bias": [dim], f"{b}{attn}.qkv.weight": [3 * dim, dim],
                           f"{b}{attn}.qkv.bias": [3 * dim], f"{b}{attn}.proj.weight": [dim, dim], f"{b}{attn}.proj.bias": [dim]})
            for gate in (("pgate",) if share_gate else ("q_gate", "k_gate")):
                shapes.update({f"{b}{attn}.{gate}.weight": [hd, 3 * hd], f"{b}{attn}.{gate}.bias": [hd]})
        shapes.update({b + "norm2.weight": [dim], b + "norm2.bias": [dim], b + "mlp.fc1.weight": [hidden, dim], b + "mlp.fc1.bias": [hidden],
                       b + "mlp.dwconv.dwconv.weight": [hidden, 1, 3, 3], b + "mlp.dwconv.dwconv.bias": [hidden],
                       b + "mlp.fc2.weight": [dim, hidden], b + "mlp.fc2.bias": [dim]})
    return shapes
