"""A stand-in model with the training hooks of tubelet's classifiers, for engine unit tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """``[B, C, T, H, W] -> [B, K]``: an embedding, two "blocks", a norm and a head."""

    def __init__(self, num_classes: int = 3, dim: int = 8):
        super().__init__()
        self.num_layers = 2
        self.pos_embed = nn.Parameter(torch.zeros(1, dim))
        self.embed = nn.Linear(3, dim)
        self.blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.embed(video.mean(dim=(2, 3, 4))) + self.pos_embed  # [B, D]
        for block in self.blocks:
            x = x + torch.tanh(block(x))
        return self.head(self.norm(x))

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def layer_id(self, name: str) -> int:
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return 0 if name.startswith(("embed", "pos_embed")) else self.num_layers + 1
