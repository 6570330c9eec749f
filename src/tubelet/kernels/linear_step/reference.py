"""Plain PyTorch form of what the fused linear attention step computes, for its tests.

Per head, on ``Q, K, V = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]`` (``[B, L, heads, d]``, tokens in
``(t, h, w)`` order on the grid ``(T, H, W)``):

    K, V <- their channels moved across the grid by ``shift``       (neighbourhood association)
    Q~, K~ = rho(Q), rho(K)                                         (kernel feature map)
    gamma = sigmoid([Q~, K~, V] W^T + b);  Q^, K^ = gamma Q~, gamma K~  (cooperative fixation, Eq. 5)
        (with a key gate U, c: gamma_k = sigmoid([Q~, K~, V] U^T + c) re-weights K~ instead)
    Y = Eq. 3 of Q^, K^, V within each group of tokens

with the kernels' numerics: float32 (at least) throughout, the normaliser clamped below at
``eps``, the output in ``qkv``'s dtype. ``shift [heads * d / run, 3]`` holds, for every run of
``run`` consecutive channels (``run`` divides ``d``; 1: a row per channel), the offset ``(dt,
dh, dw)`` of the token they are read from (zero outside the grid); ``layout = (groups,
length, group_stride, member_stride)`` puts member ``i`` of group ``g`` at token
``g * group_stride + i * member_stride``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_map(x: torch.Tensor, feature: str, offset: float) -> torch.Tensor:
    """``rho``: ``relu`` (ReLU + offset), ``elu`` (ELU + 1) or ``sigmoid``."""
    if feature == "relu":
        return F.relu(x) + offset
    if feature == "elu":
        return F.elu(x) + 1.0
    if feature == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"unknown feature map {feature!r}; expected relu, elu or sigmoid")


def gather_shift(x: torch.Tensor, shift: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``[B, T*H*W, *M, C] -> [B, T*H*W, *M, C]``: channel ``c`` at ``(t, h, w)`` read from
    ``(t, h, w) + shift[c]``, zero where that falls outside the grid."""
    t, h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 1, 3)
    source = coords + shift.cpu().long()  # [L, C, 3]
    limits = torch.tensor([t, h, w])
    inside = ((source >= 0) & (source < limits)).all(-1)  # [L, C]
    index = (source[..., 0] * h + source[..., 1]) * w + source[..., 2]
    index = torch.where(inside, index, 0).to(x.device)  # [L, C]
    middle = [1] * (x.dim() - 3)
    view = index.reshape(1, index.shape[0], *middle, index.shape[1]).expand(x.shape)
    return torch.gather(x, 1, view) * inside.to(x.device).reshape(index.shape[0], *middle, index.shape[1]).to(x.dtype)


def linear_step_reference(
    qkv: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    feature: str,
    offset: float,
    eps: float,
    layout: tuple[int, int, int, int],
    grid: tuple[int, int, int],
    shift: torch.Tensor | None = None,
    key_weight: torch.Tensor | None = None,
    key_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``qkv [B, L, 3, heads, d] -> [B, L, heads, d]``; ``weight [d, 3d]``, ``bias [d]`` (None, None:
    no fixation), shared by Q and K unless the key has its own ``key_weight``, ``key_bias``."""
    dtype = qkv.dtype
    wide = torch.promote_types(dtype, torch.float32)
    batch, length, _, heads, d = qkv.shape
    x = qkv.to(wide)
    q, kv = x[:, :, 0], x[:, :, 1:]  # [B, L, heads, d], [B, L, 2, heads, d]
    if shift is not None:
        per_channel = shift.repeat_interleave(heads * d // shift.shape[0], dim=0)  # rows of runs -> [heads * d, 3]
        kv = gather_shift(kv.reshape(batch, length, 2, heads * d), per_channel, grid).reshape(kv.shape)
    k, v = kv[:, :, 0], kv[:, :, 1]
    q_feat, k_feat = feature_map(q, feature, offset), feature_map(k, feature, offset)
    if weight is not None:
        inputs = torch.cat([q_feat, k_feat, v], dim=-1)
        gamma_q = torch.sigmoid(F.linear(inputs, weight.to(wide), bias.to(wide)))
        gamma_k = gamma_q if key_weight is None else torch.sigmoid(F.linear(inputs, key_weight.to(wide), key_bias.to(wide)))
        q_feat, k_feat = gamma_q * q_feat, gamma_k * k_feat
    groups, size, group_stride, member_stride = layout
    index = (torch.arange(groups)[:, None] * group_stride + torch.arange(size)[None, :] * member_stride).reshape(-1).to(qkv.device)
    q_g, k_g, v_g = (t[:, index].unflatten(1, (groups, size)).permute(0, 1, 3, 2, 4) for t in (q_feat, k_feat, v))  # [B, G, heads, S, d]
    state = k_g.transpose(-2, -1) @ v_g  # [B, G, heads, d, d]
    normaliser = (q_g @ k_g.sum(-2).unsqueeze(-1)).clamp_min(eps)  # [B, G, heads, S, 1]
    out_g = (q_g @ state) / normaliser
    out = torch.empty(batch, length, heads, d, dtype=wide, device=qkv.device)
    out[:, index] = out_g.permute(0, 1, 3, 2, 4).reshape(batch, groups * size, heads, d)
    return out.to(dtype)
