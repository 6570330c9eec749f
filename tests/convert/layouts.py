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
