"""Pooling attention against a slow, explicit reference in float64: pool by summing shifted
copies, attend with the relative-position term written entry by entry, residual-pool, project."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch

import tubelet.attention.pooling as pooling
from tubelet.attention.pooling import PoolingAttention, pooled_shape
from tubelet.layers.shape import VideoShape


def shifted_windows(grid: torch.Tensor, kernel, stride, fill: float):
    """Each kernel offset's strided view of ``grid`` ``[N, C, T, H, W]`` padded by ``kernel // 2``
    with ``fill``: the terms that pooling combines."""
    pads = [k // 2 for k in kernel]
    padded = torch.nn.functional.pad(grid, [p for p in reversed(pads) for _ in range(2)], value=fill)
    out = pooled_shape(VideoShape(*grid.shape[2:]), kernel, stride)
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = [slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, stride, out)]
        yield offset, padded[(..., *index)]


def reference_pool(x: torch.Tensor, shape: VideoShape, prefix: int, mode: str, kernel, stride, weight=None):
    """``x [N, heads, P + L, d]`` -> pooled, every head with the same ``weight [d, 1, *kernel]``."""
    n, heads, _, d = x.shape
    grid = x[:, :, prefix:].reshape(n * heads, *shape, d).permute(0, 4, 1, 2, 3)
    terms = list(shifted_windows(grid, kernel, stride, float("-inf") if mode == "max" else 0.0))
    if mode == "conv":
        pooled = sum(view * weight[:, 0][(slice(None), *offset)][None, :, None, None, None] for offset, view in terms)
    elif mode == "max":
        pooled = torch.stack([view for _, view in terms]).amax(0)
    else:
        pooled = sum(view for _, view in terms) / math.prod(kernel)
    new = VideoShape(*pooled.shape[2:])
    tokens = pooled.permute(0, 2, 3, 4, 1).reshape(n, heads, new.num_patches, d)
    return torch.cat([x[:, :, :prefix], tokens], dim=2), new


def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def table_row(q: int, k: int, i: int, j: int) -> int:
    """MViTv2's table index: coordinates scaled to the finer grid, distance shifted to >= 0."""
    q_ratio, k_ratio = max(Fraction(k, q), 1), max(Fraction(q, k), 1)
    return math.floor(i * q_ratio - j * k_ratio + (k - 1) * k_ratio)


def reference(attn: PoolingAttention, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
    b, tokens, _ = x.shape
    prefix = tokens - shape.num_patches
    heads, d = attn.num_heads, attn.head_dim
    q, k, v = (part.reshape(b, tokens, heads, d).transpose(1, 2) for part in (attn.qkv(x)).chunk(3, dim=-1))
    q_shape = k_shape = shape
    if attn.pools_q:
        q, q_shape = reference_pool(q, shape, prefix, attn.mode, attn.kernel_q, attn.stride_q, getattr(getattr(attn, "pool_q", None), "weight", None))
    if attn.pools_kv:
        k, k_shape = reference_pool(k, shape, prefix, attn.mode, attn.kernel_kv, attn.stride_kv, getattr(getattr(attn, "pool_k", None), "weight", None))
        v, _ = reference_pool(v, shape, prefix, attn.mode, attn.kernel_kv, attn.stride_kv, getattr(getattr(attn, "pool_v", None), "weight", None))
    if attn.mode == "conv":
        q = layer_norm(q, attn.norm_q) if attn.pools_q else q
        k = layer_norm(k, attn.norm_k) if attn.pools_kv else k
        v = layer_norm(v, attn.norm_v) if attn.pools_kv else v
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if attn.rel_pos:
        q_coords = list(itertools.product(*(range(n) for n in q_shape)))
        k_coords = list(itertools.product(*(range(n) for n in k_shape)))
        tables = [pooling.resize_table(getattr(attn, f"rel_pos_{a}"), 2 * max(qs, ks) - 1) for a, qs, ks in zip("thw", q_shape, k_shape)]
        bias = torch.zeros_like(scores)
        for i, qc in enumerate(q_coords):
            for j, kc in enumerate(k_coords):
                r = sum(table[table_row(qs, ks, a, c)] for table, qs, ks, a, c in zip(tables, q_shape, k_shape, qc, kc))
                bias[:, :, prefix + i, prefix + j] = q[:, :, prefix + i] @ r
        scores = scores + bias
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    out = (weights / weights.sum(-1, keepdim=True)) @ v
    if attn.residual_pool:
        out = out + torch.cat([torch.zeros_like(q[:, :, :prefix]), q[:, :, prefix:]], dim=2)
    return attn.proj(out.transpose(1, 2).reshape(b, -1, heads * d))


CASES = {
    "conv_q_and_kv_strides": dict(dim=8, dim_out=16, num_heads=2, grid=(2, 4, 4), stride_q=(1, 2, 2), stride_kv=(1, 2, 2)),
    "conv_kv_only_temporal": dict(dim=12, dim_out=12, num_heads=3, grid=(4, 4, 4), stride_q=(1, 1, 1), stride_kv=(2, 2, 2)),
    "conv_no_class_token": dict(dim=8, dim_out=8, num_heads=1, grid=(2, 4, 2), stride_q=(2, 1, 1), stride_kv=(1, 2, 2), prefix=0),
    "conv_no_rel_pos_no_residual": dict(dim=8, dim_out=8, num_heads=2, grid=(2, 4, 4), stride_kv=(1, 2, 2), rel_pos=False, residual_pool=False),
    "conv_kernel_only": dict(dim=8, dim_out=8, num_heads=2, grid=(2, 3, 3), kernel_q=(1, 3, 3), kernel_kv=(1, 3, 3)),
    "max": dict(dim=8, dim_out=16, num_heads=2, grid=(2, 4, 4), stride_q=(1, 2, 2), stride_kv=(1, 4, 4), mode="max"),
    "avg": dict(dim=8, dim_out=8, num_heads=2, grid=(4, 4, 4), stride_kv=(2, 2, 2), mode="avg", residual_pool=False),
}


def build(case: dict, seed: int = 0) -> tuple[PoolingAttention, torch.Tensor, VideoShape]:
    case = dict(case)
    grid, prefix = VideoShape(*case.pop("grid")), case.pop("prefix", 1)
    torch.manual_seed(seed)
    attn = PoolingAttention(case.pop("dim"), case.pop("dim_out"), case.pop("num_heads"), input_grid=grid, **case).double()
    with torch.no_grad():  # norms, biases and tables away from their initial values
        for param in attn.parameters():
            param.add_(0.3 * torch.randn_like(param))
    x = torch.randn(2, prefix + grid.num_patches, attn.qkv.in_features, dtype=torch.float64, requires_grad=True)
    return attn, x, grid


@pytest.mark.parametrize("path", ["folded", "bias"])
@pytest.mark.parametrize("name", CASES)
def test_matches_the_explicit_reference_with_gradients(name, path, monkeypatch):
    monkeypatch.setattr(pooling, "RELATIVE_POSITIONS", path)
    attn, x, grid = build(CASES[name])
    out, shape = attn(x, grid)
    expected = reference(attn, x, grid)
    assert shape == pooled_shape(grid, attn.kernel_q, attn.stride_q) if attn.pools_q else shape == grid
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(out)
    params = [x, *attn.parameters()]
    got = torch.autograd.grad((out * weights).sum(), params)
    want = torch.autograd.grad((expected * weights).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_other_grids_interpolate_the_tables_as_the_reference_does():
    attn, _, grid = build(CASES["conv_q_and_kv_strides"])
    other = VideoShape(3, 8, 8)  # longer and larger than constructed: tables are resized
    x = torch.randn(1, 1 + other.num_patches, 8, dtype=torch.float64)
    out, shape = attn(x, other)
    assert shape == (3, 4, 4)
    torch.testing.assert_close(out, reference(attn, x, other), rtol=1e-10, atol=1e-10)
    assert attn.resized_state(other)["rel_pos_t"].shape == (5, attn.head_dim)


def test_relative_index_follows_the_definition():
    for q, k in [(4, 4), (4, 2), (2, 4), (8, 1), (7, 7)]:
        got = pooling.relative_index(q, k)
        assert got.shape == (q, k) and got.min() >= 0 and got.max() <= 2 * max(q, k) - 2
        assert got.tolist() == [[table_row(q, k, i, j) for j in range(k)] for i in range(q)]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="unknown pooling mode 'mean'"):
        PoolingAttention(8, 8, 2, input_grid=VideoShape(2, 4, 4), mode="mean")
    with pytest.raises(ValueError, match="width 10 is not divisible by num_heads=4"):
        PoolingAttention(8, 10, 4, input_grid=VideoShape(2, 4, 4))
