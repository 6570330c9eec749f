"""Image ViT checkpoints in timm's layout, the starting point of every ViT-based video recipe.

timm's ``VisionTransformer`` names: ``patch_embed.proj.{weight [D, C, P, P], bias}``,
``cls_token [1, 1, D]``, ``pos_embed [1, 1 + g*g, D]`` (no class-token row for models without
one), per block ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``,
``head`` and, in the ImageNet-21k releases, ``pre_logits.fc``.

``read_timm_vit(path)`` reads such a checkpoint from
- ``.pth`` / ``.pt`` / ``.bin`` / ``.pyth``: a ``torch.save`` state dict, bare or under ``model``,
  ``state_dict`` (DeiT, timm's training scripts) or ``model_state`` (PySlowFast and the official
  image MViTv2 releases, which ``tubelet.convert.imagenet`` also reads); a ``module.`` prefix (DDP) is removed;
- ``.safetensors``: timm's hub files;
- ``.npz``: Google's ViT releases (``vit_jax``, ``big_vision``), converted by
  ``convert_google_vit``, a pure function over ``GOOGLE_VIT_KEYS``.
What the video models take from it is ``tubelet.convert.imagenet``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from tubelet.convert.flax_layout import read_npz, strip_tree_prefix, to_torch_layout
from tubelet.convert.keys import Rule, read_weight_file, rename

SOURCE = "Google ViT"
SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz", ".pyth")  # .pyth: the official image MViTv2 releases
ENCODER_BLOCK = r"Transformer/encoderblock_(\d+)/"
# Flax numbers sub-modules per class in newer releases (LayerNorm_0, MultiHeadDotProductAttention_0,
# LayerNorm_1, MlpBlock_0) and across classes in the first ones (..._1, LayerNorm_2, MlpBlock_3).
GOOGLE_VIT_KEYS: list[Rule] = [
    (r"embedding/kernel", "patch_embed.proj.kernel"),
    (r"embedding/bias", "patch_embed.proj.bias"),
    (r"cls", "cls_token"),
    (r"(?:Transformer/posembed_input/)?pos_embedding", "pos_embed"),
    (ENCODER_BLOCK + r"LayerNorm_0/(scale|bias)", r"blocks.\1.norm1.\2"),
    (ENCODER_BLOCK + r"MultiHeadDotProductAttention_\d/(query|key|value)/(kernel|bias)", r"blocks.\1.attn.\2.\3"),
    (ENCODER_BLOCK + r"MultiHeadDotProductAttention_\d/out/(kernel|bias)", r"blocks.\1.attn.proj.\2"),
    (ENCODER_BLOCK + r"LayerNorm_[12]/(scale|bias)", r"blocks.\1.norm2.\2"),
    (ENCODER_BLOCK + r"MlpBlock_\d/Dense_0/(kernel|bias)", r"blocks.\1.mlp.fc1.\2"),
    (ENCODER_BLOCK + r"MlpBlock_\d/Dense_1/(kernel|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"Transformer/encoder_norm/(scale|bias)", r"norm.\1"),
    (r"pre_logits/(kernel|bias)", r"pre_logits.fc.\1"),
    (r"head/(kernel|bias)", r"head.\1"),
]


def convert_google_vit(arrays: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Google ViT parameter tree (``.npz`` names) -> a timm ``VisionTransformer`` state dict.
    A name outside ``GOOGLE_VIT_KEYS`` is a ValueError naming it."""
    return to_torch_layout(rename(strip_tree_prefix(dict(arrays)), GOOGLE_VIT_KEYS, SOURCE))


def unwrap_state(checkpoint, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (``model`` / ``state_dict`` / ``model_state``), without DDP's
    ``module.`` prefix; a file that holds no mapping of names to tensors is named."""
    for key in ("model", "state_dict", "model_state"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping) or not checkpoint or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    if all(name.startswith("module.") for name in checkpoint):
        return {name[len("module."):]: value for name, value in checkpoint.items()}
    return dict(checkpoint)


def read_timm_vit(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The timm-named state dict of an image ViT checkpoint file (see the module docstring)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: an image checkpoint must end in one of {', '.join(SUFFIXES)}")
    if path.suffix == ".npz":
        return convert_google_vit(read_npz(path))
    return unwrap_state(read_weight_file(path), path)
