"""The transformer's feed-forward sublayer."""

from __future__ import annotations

import torch
from torch import nn

from tubelet.layers.shape import VideoShape, split_prefix

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

    def forward(self, x: torch.Tensor, shape: VideoShape | None = None) -> torch.Tensor:
        """``shape`` is not used: every token goes through on its own."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConvMlp(Mlp):
    """``fc2(drop(act(dwconv(fc1(x)))))`` with a 3 x 3 depth-wise convolution over each frame's
    token grid between the two layers (the LVT code's ``Mlp`` with ``DWConv``, after PVTv2).
    ``x [B, P + T*H*W, D]`` on grid ``shape``; prefix tokens skip the convolution."""

    def __init__(self, dim: int, hidden_dim: int, *, act: str = "gelu", drop: float = 0.0):
        super().__init__(dim, hidden_dim, act=act, drop=drop)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)

    def forward(self, x: torch.Tensor, shape: VideoShape | None = None) -> torch.Tensor:
        if shape is None:
            raise ValueError("the convolutional MLP needs the token grid")
        h = self.fc1(x)
        batch, tokens, width = h.shape
        p = shape.num_prefix(tokens)
        prefix, patches = split_prefix(h, p)
        frames = patches.reshape(batch * shape.t, shape.h, shape.w, width).permute(0, 3, 1, 2)  # [B*T, E, H, W]
        grid = self.dwconv(frames).permute(0, 2, 3, 1).reshape(batch, shape.num_patches, width)
        h = torch.cat([prefix, grid], dim=1)  # [B, P + T*H*W, E]
        return self.drop(self.fc2(self.drop(self.act(h))))


MLPS = {"plain": Mlp, "dwconv": ConvMlp}
