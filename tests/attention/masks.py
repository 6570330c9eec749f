"""Attention masks written from each scheme's definition by index arithmetic: the slow, obvious
form of the grouped computations, used as their reference."""

from __future__ import annotations

import torch

from tubelet.layers.shape import VideoShape


def coordinates(shape: VideoShape) -> torch.Tensor:
    """``[T*H*W, 3]`` (t, h, w) of each patch token in time-major order."""
    t, h, w = torch.meshgrid(torch.arange(shape.t), torch.arange(shape.h), torch.arange(shape.w), indexing="ij")
    return torch.stack([t.flatten(), h.flatten(), w.flatten()], dim=1)


def same(key: torch.Tensor) -> torch.Tensor:
    """``[L, L]``: True where two tokens have equal ``key`` rows."""
    return (key[:, None, :] == key[None, :, :]).all(dim=-1)


def grouping_key(grouping: str, shape: VideoShape, local_splits=(1, 2, 2), global_stride=(2, 2, 2)) -> torch.Tensor:
    c = coordinates(shape)
    t, h, w = c[:, :1], c[:, 1:2], c[:, 2:]
    if grouping == "joint":
        return torch.zeros_like(t)
    if grouping == "frame":
        return t
    if grouping == "tube":
        return torch.cat([h, w], dim=1)
    if grouping == "row":
        return torch.cat([t, h], dim=1)
    if grouping == "column":
        return torch.cat([t, w], dim=1)
    if grouping == "window":
        window = torch.tensor([shape.t // local_splits[0], shape.h // local_splits[1], shape.w // local_splits[2]])
        return c // window
    if grouping == "stride":
        return c % torch.tensor(global_stride)
    raise ValueError(grouping)


def with_prefix(patch_mask: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Prefix tokens attend to everything and are attended by everything."""
    n = patch_mask.shape[0] + num_prefix
    mask = torch.ones(n, n, dtype=torch.bool)
    mask[num_prefix:, num_prefix:] = patch_mask
    return mask
