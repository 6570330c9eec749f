"""What every tubelet classifier offers to training code, whatever its family."""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tubelet.layers.shape import VideoShape


def init_weights(module: nn.Module) -> None:
    """ViT initialisation: truncated normal (std 0.02) linear weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VideoClassifier(nn.Module):
    """Base of the video models: training hooks shared by every family.

    Subclasses set ``self.head`` (the final Linear), ``self.num_layers`` and list their block
    containers in ``block_groups`` (names of ``nn.ModuleList`` attributes, in depth order), and
    call ``run_blocks`` to go through a group.
    """

    block_groups: tuple[str, ...] = ("blocks",)
    embedding_prefixes: tuple[str, ...] = ("patch_embed", "pos_embed", "cls_token")
    grad_checkpointing: bool = False

    def initialise(self) -> None:
        """ViT initialisation of every layer, then each scheme's own residual initialisation
        (``init_residual(layer_index)``, e.g. TimeSformer's zeroed ``temporal_fc``)."""
        self.apply(init_weights)
        for group in self.block_groups:
            for index, block in enumerate(getattr(self, group)):
                if hasattr(block.attn, "init_residual"):
                    block.attn.init_residual(index)
        for name, param in self.named_parameters():
            if name.endswith("token"):
                nn.init.trunc_normal_(param, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        for block in blocks:
            if self.grad_checkpointing and self.training:
                x, shape = checkpoint(block, x, shape, use_reentrant=False)
            else:
                x, shape = block(x, shape)
        return x, shape

    def no_weight_decay(self) -> set[str]:
        """Parameter names that weight decay must skip: tokens and positional embeddings."""
        return {name for name, _ in self.named_parameters() if name.split(".")[-1].endswith("token") or "pos_embed" in name}

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: embeddings 0, the i-th block i + 1 (counting
        across ``block_groups``), everything after the blocks ``num_layers + 1``."""
        offset = 0
        for group in self.block_groups:
            match = re.match(rf"{group}\.(\d+)\.", param_name)
            if match:
                return offset + int(match.group(1)) + 1
            offset += len(getattr(self, group))
        if param_name.startswith(self.embedding_prefixes):
            return 0
        return self.num_layers + 1

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised head for ``num_classes`` classes."""
        width = self.head.in_features
        self.head = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        init_weights(self.head)
        self.num_classes = num_classes

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` normalised video -> logits ``[B, num_classes]``."""
        return self.head(self.head_drop(self.forward_features(video)))
