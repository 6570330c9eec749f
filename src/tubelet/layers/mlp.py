"""The transformer's feed-forward sublayer."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    # The tanh approximation; Hugging Face's ViViT calls it "gelu_fast".
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))``: ``[..., D] -> [..., D]`` through a hidden width ``hidden_dim``."""

    def __init__(self, dim: int, hidden_dim: int, *, act: str = "gelu", drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = make_activation(act)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
