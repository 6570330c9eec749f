"""Multi-head pooling attention (MViT: Fan et al. 2021, Sec. 3.1; MViTv2: Li et al. 2022, Sec. 4.1).

Queries, keys and values are pooled on the ``(t, h, w)`` token grid before attending (MViT's
pooling attention): ``Attn(P_Q(Q), P_K(K), P_V(V))``. Each pooling is a strided depthwise 3D convolution
followed by a LayerNorm over the head width (``mode="conv"``, MViT's "conv pooling"), or a max or
average pooling without parameters (``"max"``, ``"avg"``). One convolution of width ``d`` is
shared by all heads, as in both reference implementations. Pooling ``Q`` with stride ``s_Q``
shrinks the output grid, and with it every later layer; pooling ``K`` and ``V`` with ``s_KV``
only makes attention cheaper (``O(L * L / prod(s_KV))``).

MViTv2 adds
- decomposed relative positions: ``softmax(Q K^T / sqrt(d) + E_rel) V`` with
  ``E_rel[i, j] = Q_i . (R_t[t(i), t(j)] + R_h[h(i), h(j)] + R_w[w(i), w(j)])``, one learned table
  per axis indexed by the (stride-scaled) distance of the query's and the key's coordinates
  (``E_rel`` is not divided by ``sqrt(d)``, as in torchvision's and PySlowFast's code);
- the residual pooling connection: ``Z = Attn(Q, K, V) + Q`` with the pooled ``Q``.
Prefix tokens (the class token) are never pooled but are normalised with the pooled tokens; they
get no relative position term and no residual ``Q``, as in torchvision and PySlowFast.

The relative term need not be materialised as an ``[Lq, Lk]`` bias: ``E_rel[i, j]`` is the dot
product of ``r_i = (Q_i . R_t[t(i), :], Q_i . R_h[h(i), :], Q_i . R_w[w(i), :])`` (``kt + kh + kw``
numbers per query) with the one-hot code of the key's ``(t, h, w)``, so appending ``r_i`` to the
query and the code to the key gives the scores with the term included, and the inner attention
stays one fused kernel. That is exact; ``RELATIVE_POSITIONS`` picks this path or the bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.attention.core import SoftmaxCore
from tubelet.layers.norm import LayerNorm
from tubelet.layers.shape import VideoShape

Factors = tuple[int, int, int]
POOL_MODES = ("conv", "max", "avg")


def pooled_shape(shape: VideoShape, kernel: Factors, stride: Factors) -> VideoShape:
    """The grid after pooling with ``kernel``, ``stride`` and padding ``kernel // 2``."""
    return VideoShape(*((n + 2 * (k // 2) - k) // s + 1 for n, k, s in zip(shape, kernel, stride)))


def pool_grid(
    x: torch.Tensor, mode: str, kernel: Factors, stride: Factors, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, C, T', H', W']``: depthwise convolution with ``weight`` ``[C, 1, *kernel]``
    (``mode="conv"``), max or average pooling; padding ``kernel // 2`` on every axis."""
    padding = tuple(k // 2 for k in kernel)
    if mode == "conv":
        # Contiguous, so that CUDA takes ATen's depthwise 3D kernel: for a channels-last input torch
        # picks cuDNN's grouped direct convolution, which took 51% of MViTv2-S's GPU time at batch 32
        # on an H200 (73 ms a forward, against 13 ms for the same convolutions in torchvision).
        return F.conv3d(x.contiguous(), weight, stride=stride, padding=padding, groups=x.shape[1])
    if mode == "max":
        return F.max_pool3d(x, kernel, stride, padding)
    return F.avg_pool3d(x, kernel, stride, padding)


def pool_tokens(
    x: torch.Tensor, shape: VideoShape, prefix: int, mode: str, kernel: Factors, stride: Factors,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, VideoShape]:
    """Pool the grid tokens of ``x`` ``[B, P + T*H*W, C]``; the ``P`` prefix tokens pass unchanged.
    Returns ``[B, P + T'*H'*W', C]`` and the new grid."""
    batch, _, channels = x.shape
    grid = x[:, prefix:].reshape(batch, *shape, channels).permute(0, 4, 1, 2, 3)  # [B, C, T, H, W], channels last in memory
    pooled = pool_grid(grid, mode, kernel, stride, weight)
    new_shape = VideoShape(*pooled.shape[2:])
    tokens = pooled.flatten(2).transpose(1, 2)  # [B, T'*H'*W', C], a view: the concatenation is the one copy
    return torch.cat([x[:, :prefix], tokens], dim=1), new_shape


class HeadConv(nn.Module):
    """The weight ``[d, 1, kt, kh, kw]`` of a depthwise convolution of width ``d`` that every head
    shares; ``for_heads(n)`` repeats it for ``n`` heads laid side by side in the channels."""

    def __init__(self, width: int, kernel: Factors):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width, 1, *kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv3d's initialisation

    def for_heads(self, heads: int) -> torch.Tensor:
        return self.weight.repeat(heads, 1, 1, 1, 1)  # [heads * d, 1, kt, kh, kw]


# How the relative-position term reaches the softmax: "folded" into q and k (one fused attention
# call, ~7% more multiply-accumulates in it), as an additive "bias" [B, heads, Lq, Lk] (the MACs
# the papers count, one more pass over the scores), or "auto": folded on CUDA, where SDPA has a
# fused kernel for it, bias elsewhere (so ``tubelet models``, which counts on the meta device,
# reports the papers' MACs). Both give the same result; tests check that they agree.
RELATIVE_POSITIONS = "auto"
RELATIVE_POSITION_PATHS = ("auto", "folded", "bias")


def fold_positions(device: torch.device) -> bool:
    if RELATIVE_POSITIONS not in RELATIVE_POSITION_PATHS:
        raise ValueError(f"RELATIVE_POSITIONS={RELATIVE_POSITIONS!r}; expected one of {RELATIVE_POSITION_PATHS}")
    return RELATIVE_POSITIONS == "folded" or (RELATIVE_POSITIONS == "auto" and device.type == "cuda")


def relative_index(q_size: int, k_size: int, device: torch.device | None = None) -> torch.Tensor:
    """``[q_size, k_size]`` row of the relative-position table for each query/key coordinate pair
    (MViTv2 Sec. 4.1): the coordinates are scaled to the finer of the two grids, and the distance is
    shifted to start at 0, so the table needs ``2 * max(q_size, k_size) - 1`` rows."""
    q_ratio = max(k_size / q_size, 1.0)
    k_ratio = max(q_size / k_size, 1.0)
    q_pos = torch.arange(q_size, device=device)[:, None] * q_ratio
    k_pos = (torch.arange(k_size, device=device)[None, :] - (k_size - 1)) * k_ratio
    return (q_pos - k_pos).long()


def key_position_code(shape: VideoShape, device: torch.device | None = None) -> torch.Tensor:
    """``[T*H*W, T + H + W]``: for each grid key the one-hot code of its ``t``, ``h`` and ``w`` in
    columns ``t``, ``T + h`` and ``T + H + w``."""
    t, h, w = torch.meshgrid(*(torch.arange(n, device=device) for n in shape), indexing="ij")
    columns = torch.stack([t, shape.t + h, shape.t + shape.h + w], dim=-1).reshape(-1, 3)  # [T*H*W, 3]
    return torch.zeros(shape.num_patches, sum(shape), device=device).scatter_(1, columns, 1.0)


def resize_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """A ``[L, d]`` relative-position table linearly interpolated to ``[length, d]``."""
    if table.shape[0] == length:
        return table
    return F.interpolate(table.t().unsqueeze(0), size=length, mode="linear").squeeze(0).t()


class PoolingAttention(nn.Module):
    """MViTv2 multi-head pooling attention: ``([B, P + T*H*W, dim], (T, H, W)) ->
    ([B, P + T'*H'*W', dim_out], (T', H', W'))`` with ``(T', H', W')`` the grid pooled by ``stride_q``.

    ``qkv`` projects to ``dim_out`` (MViTv2 changes the width in the attention), ``heads`` of
    width ``d = dim_out / num_heads``; ``Q`` is pooled with ``kernel_q, stride_q``, ``K`` and ``V``
    with ``kernel_kv, stride_kv`` (no pooling where kernel and stride are all 1). ``input_grid`` is
    the grid the relative-position tables are sized for; other grids interpolate them.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        input_grid: VideoShape,
        kernel_q: Factors = (3, 3, 3),
        stride_q: Factors = (1, 1, 1),
        kernel_kv: Factors = (3, 3, 3),
        stride_kv: Factors = (1, 1, 1),
        mode: str = "conv",
        qkv_bias: bool = True,
        rel_pos: bool = True,
        residual_pool: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        if mode not in POOL_MODES:
            raise ValueError(f"unknown pooling mode {mode!r}; expected one of {POOL_MODES}")
        if dim_out % num_heads:
            raise ValueError(f"attention width {dim_out} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim_out // num_heads
        self.mode = mode
        self.shape = VideoShape(*input_grid)
        self.kernel_q, self.stride_q = tuple(kernel_q), tuple(stride_q)
        self.kernel_kv, self.stride_kv = tuple(kernel_kv), tuple(stride_kv)
        self.residual_pool = residual_pool
        self.qkv = nn.Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)
        self.proj_drop = nn.Dropout(proj_drop)
        self.core = SoftmaxCore(attn_drop)
        self.pools_q = math.prod(self.kernel_q) > 1 or math.prod(self.stride_q) > 1
        self.pools_kv = math.prod(self.kernel_kv) > 1 or math.prod(self.stride_kv) > 1
        for name, kernel, pooled in (("q", self.kernel_q, self.pools_q), ("k", self.kernel_kv, self.pools_kv), ("v", self.kernel_kv, self.pools_kv)):
            if pooled and mode == "conv":
                setattr(self, f"pool_{name}", HeadConv(self.head_dim, kernel))
                setattr(self, f"norm_{name}", LayerNorm(self.head_dim, eps=norm_eps))
        self.rel_pos = rel_pos
        if rel_pos:
            spatial, temporal = self.table_lengths(self.shape)
            for axis, length in (("h", spatial), ("w", spatial), ("t", temporal)):
                table = nn.Parameter(torch.zeros(length, self.head_dim))
                nn.init.trunc_normal_(table, std=0.02)
                setattr(self, f"rel_pos_{axis}", table)
            # The table rows and key codes of the constructed grid, made once (the index
            # arithmetic is a dozen tiny kernels per call); other grids compute theirs.
            self.q_grid = pooled_shape(self.shape, self.kernel_q, self.stride_q) if self.pools_q else self.shape
            self.k_grid = pooled_shape(self.shape, self.kernel_kv, self.stride_kv) if self.pools_kv else self.shape
            for axis, q_size, k_size in zip("thw", self.q_grid, self.k_grid):
                self.register_buffer(f"index_{axis}", relative_index(q_size, k_size), persistent=False)
            self.register_buffer("key_code", key_position_code(self.k_grid), persistent=False)

    def table_lengths(self, grid: VideoShape) -> tuple[int, int]:
        """Rows of the spatial (``h`` and ``w``) and temporal tables for input ``grid``, as
        torchvision sizes them: the larger of the query and key extents of the larger side."""
        size = max(grid.h, grid.w)
        return 2 * max(size // self.stride_q[1], size // self.stride_kv[1]) - 1, 2 * grid.t - 1

    def resized_state(self, shape: VideoShape) -> dict[str, torch.Tensor]:
        """The relative-position tables interpolated to the lengths for input grid ``shape``."""
        if not self.rel_pos:
            return {}
        spatial, temporal = self.table_lengths(shape)
        return {
            "rel_pos_h": resize_table(self.rel_pos_h, spatial),
            "rel_pos_w": resize_table(self.rel_pos_w, spatial),
            "rel_pos_t": resize_table(self.rel_pos_t, temporal),
        }

    def pool(self, x: torch.Tensor, shape: VideoShape, prefix: int, names: str) -> tuple[torch.Tensor, VideoShape]:
        """Pool ``[B, P + L, len(names) * heads * d]`` (``names``: ``"q"`` or ``"kv"``, laid side by
        side) in one call; each part's heads share its convolution."""
        kernel, stride = (self.kernel_q, self.stride_q) if names == "q" else (self.kernel_kv, self.stride_kv)
        weight = None
        if self.mode == "conv":
            weight = torch.cat([getattr(self, f"pool_{name}").for_heads(self.num_heads) for name in names])
        return pool_tokens(x, shape, prefix, self.mode, kernel, stride, weight)

    def split_heads(self, x: torch.Tensor, name: str, pooled: bool) -> torch.Tensor:
        """``[B, L, heads * d] -> [B, heads, L, d]``, normalised per head after conv pooling.
        The norm's output keeps the input's dtype: under autocast LayerNorm returns float32,
        which the attention would only cast back, after twice the memory traffic."""
        x = x.unflatten(-1, (self.num_heads, self.head_dim))
        if pooled and self.mode == "conv":
            x = getattr(self, f"norm_{name}")(x).to(x.dtype)
        return x.transpose(1, 2)

    def relative_terms(self, q: torch.Tensor, prefix: int, q_shape: VideoShape, k_shape: VideoShape) -> list[torch.Tensor]:
        """``Q_i . R_axis[axis(i), c]`` for every grid query ``i`` and key coordinate ``c`` of each
        axis (MViTv2 Sec. 4.1): ``[B, heads, T, H, W, kt]``, ``[..., kh]`` and ``[..., kw]``."""
        known = (q_shape, k_shape) == (self.q_grid, self.k_grid)
        batch, heads = q.shape[:2]
        grid_q = q[:, :, prefix:].reshape(batch, heads, *q_shape, self.head_dim)  # [B, heads, T, H, W, d]
        terms = []
        for axis, q_size, k_size, equation in zip("thw", q_shape, k_shape, ("bntxyd,tkd->bntxyk", "bntxyd,xkd->bntxyk", "bntxyd,ykd->bntxyk")):
            table = resize_table(getattr(self, f"rel_pos_{axis}"), 2 * max(q_size, k_size) - 1)
            index = getattr(self, f"index_{axis}") if known else relative_index(q_size, k_size, table.device)
            terms.append(torch.einsum(equation, grid_q, table[index]))  # table[index]: [q_size, k_size, d]
        return terms

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix: int, q_shape: VideoShape, k_shape: VideoShape) -> torch.Tensor:
        """``[B, heads, P + Lq, d]``: softmax attention with the relative-position term, either
        folded into ``q`` and ``k`` or added as a bias (``fold_positions``; equal results)."""
        if not self.rel_pos:
            return self.core(q, k, v, prefix=prefix, grid=k_shape)
        terms = self.relative_terms(q, prefix, q_shape, k_shape)
        if not fold_positions(q.device):
            t, h, w = terms
            bias = t[..., :, None, None] + h[..., None, :, None] + w[..., None, None, :]  # [B, heads, T, H, W, kt, kh, kw]
            bias = F.pad(bias.reshape(*q.shape[:2], q_shape.num_patches, k_shape.num_patches), (prefix, 0, prefix, 0))
            return self.core(q, k, v, prefix=prefix, grid=k_shape, bias=bias)
        # Folded: q_i . k_j / sqrt(d) + E_rel[i, j] = [q_i / sqrt(d), r_i] . [k_j, onehot(j)]. Both are
        # zero-padded to a multiple of 8 and v to the same width, so that SDPA may pick its flash
        # kernel (equal widths divisible by 8); q is scaled to undo the core's 1 / sqrt(width).
        extra = sum(k_shape)
        width = -(-(self.head_dim + extra) // 8) * 8
        pad = width - self.head_dim - extra
        gain = math.sqrt(width)
        rows = F.pad(torch.cat(terms, dim=-1).flatten(2, 4), (0, 0, prefix, 0))  # [B, heads, P + Lq, kt + kh + kw]
        q_wide = F.pad(torch.cat([q * (gain / math.sqrt(self.head_dim)), rows * gain], dim=-1), (0, pad))
        code = self.key_code if k_shape == self.k_grid else key_position_code(k_shape, k.device)
        code = F.pad(code.to(k.dtype), (0, pad, prefix, 0))  # [P + Lk, width - d], prefix keys uncoded
        k_wide = torch.cat([k, code.expand(*k.shape[:2], -1, -1)], dim=-1)
        v_wide = F.pad(v, (0, width - self.head_dim))
        return self.core(q_wide, k_wide, v_wide, prefix=prefix, grid=k_shape)[..., : self.head_dim]

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        batch, tokens, _ = x.shape
        prefix = shape.num_prefix(tokens)
        width = self.num_heads * self.head_dim
        qkv = self.qkv(x)  # [B, P + T*H*W, 3 * heads * d]
        q, kv = qkv[..., :width], qkv[..., width:]
        q_shape = k_shape = shape
        if self.pools_q:
            q, q_shape = self.pool(q, shape, prefix, "q")
        if self.pools_kv:
            kv, k_shape = self.pool(kv, shape, prefix, "kv")
        q = self.split_heads(q, "q", self.pools_q)  # [B, heads, P + Lq, d]
        k = self.split_heads(kv[..., :width], "k", self.pools_kv)  # [B, heads, P + Lk, d]
        v = self.split_heads(kv[..., width:], "v", self.pools_kv)
        out = self.attend(q, k, v, prefix, q_shape, k_shape)
        if self.residual_pool:
            out = torch.cat([out[:, :, :prefix], out[:, :, prefix:] + q[:, :, prefix:]], dim=2)
        out = out.transpose(1, 2).reshape(batch, -1, width)  # [B, P + Lq, heads * d]
        return self.proj_drop(self.proj(out)), q_shape
