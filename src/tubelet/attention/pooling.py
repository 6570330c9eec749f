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
        return F.conv3d(x, weight, stride=stride, padding=padding, groups=x.shape[1])
    if mode == "max":
        return F.max_pool3d(x, kernel, stride, padding)
    return F.avg_pool3d(x, kernel, stride, padding)


def pool_tokens(
    x: torch.Tensor, shape: VideoShape, prefix: int, mode: str, kernel: Factors, stride: Factors,
    weight: torch.Tensor | None = None, parts: int = 1, heads: int = 1,
) -> tuple[torch.Tensor, VideoShape]:
    """Pool the grid tokens of ``x`` ``[B, P + T*H*W, C]``; the ``P`` prefix tokens pass unchanged.
    Returns ``[B, P + T'*H'*W', C]`` and the new grid.

    The channels are laid out ``(parts, heads, width)`` and ``weight`` is ``[parts * width, 1, *kernel]``:
    every head of a part is pooled with that part's convolution. The heads become entries of the
    convolution's batch, so no weight is repeated per head."""
    batch = x.shape[0]
    grid = x[:, prefix:].unflatten(-1, (parts, heads, -1)).unflatten(1, tuple(shape))  # [B, T, H, W, parts, heads, width]
    grid = grid.permute(0, 5, 4, 6, 1, 2, 3)  # [B, heads, parts, width, T, H, W], a view
    if mode == "conv":
        # Contiguous, so that CUDA takes ATen's depthwise 3D kernel: for a channels-last input torch
        # picks cuDNN's grouped direct convolution, which took 51% of MViTv2-S's GPU time at batch 32
        # on an H200 (73 ms a forward, against 13 ms for the same convolutions in torchvision).
        grid = grid.contiguous()
    pooled = pool_grid(grid.flatten(0, 1).flatten(1, 2), mode, kernel, stride, weight)  # [B * heads, parts * width, T', H', W']
    new_shape = VideoShape(*pooled.shape[2:])
    tokens = pooled.unflatten(0, (batch, heads)).unflatten(2, (parts, -1)).flatten(4)  # [B, heads, parts, width, T'*H'*W']
    tokens = tokens.permute(0, 4, 2, 1, 3)  # [B, T'*H'*W', parts, heads, width], a view: the concatenation is the one copy
    out = torch.cat([x[:, :prefix].unflatten(-1, (parts, heads, -1)), tokens], dim=1)
    return out.flatten(2), new_shape


class HeadConv(nn.Module):
    """The weight ``[d, 1, kt, kh, kw]`` of a depthwise convolution of width ``d`` that every head shares."""

    def __init__(self, width: int, kernel: Factors):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width, 1, *kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv3d's initialisation


# How the relative-position term reaches the softmax: "folded" into q and k (one fused attention
# call, ~7% more multiply-accumulates in it, and ~1.7% more for MViTv2-S in the products of the
# queries with every table row, ``relative_rows``), as an additive "bias" [B, heads, Lq, Lk] (the MACs
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


def heads_first(x: torch.Tensor) -> torch.Tensor:
    """``[B, L, heads, w] <-> [B, heads, L, w]``, a view: the token-major layout of projections against the core's."""
    return x.transpose(1, 2)


def folded_width(head_dim: int, k_shape: VideoShape) -> int:
    """The width of the folded ``q`` and ``k``: ``d + kt + kh + kw`` rounded up to a multiple of 8."""
    return -(-(head_dim + sum(k_shape)) // 8) * 8


def position_columns(q_shape: VideoShape, k_shape: VideoShape, prefix: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """``[P + Tq*Hq*Wq, width]``: for each query, the rows of the stacked table ``[R_t; R_h; R_w; 0]``
    (each axis's table ``2 * max(q_size, k_size) - 1`` rows long) whose products with the query are
    its relative-position terms: for every key coordinate of ``t``, then of ``h`` and ``w``
    (``kt + kh + kw`` columns), then the zero row for the remaining columns and for prefix queries."""
    lengths = [2 * max(q, k) - 1 for q, k in zip(q_shape, k_shape)]
    offsets = [0, lengths[0], lengths[0] + lengths[1]]
    coords = torch.meshgrid(*(torch.arange(n, device=device) for n in q_shape), indexing="ij")
    rows = torch.cat([
        offset + relative_index(q, k, device)[c.reshape(-1)]
        for offset, q, k, c in zip(offsets, q_shape, k_shape, coords)
    ], dim=-1)  # [Lq, kt + kh + kw]
    return F.pad(rows, (0, width - rows.shape[1], prefix, 0), value=sum(lengths))


def folded_key_code(k_shape: VideoShape, prefix: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """``[P + Lk, width]``: the keys' one-hot position codes, zero for prefix keys and beyond
    ``kt + kh + kw`` columns."""
    code = key_position_code(k_shape, device)
    return F.pad(code, (0, width - code.shape[1], prefix, 0))


def grid_rows(shape: VideoShape, prefix: int, device: torch.device | None = None) -> torch.Tensor:
    """``[P + T*H*W, 1, 1]``, boolean: which tokens are on the grid (not prefix tokens)."""
    return (torch.arange(prefix + shape.num_patches, device=device) >= prefix)[:, None, None]


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
        # Index tables, key codes and the residual's mask for the constructed grid with one class
        # token, made once (the index arithmetic is a dozen tiny kernels per call); other inputs
        # compute theirs.
        self.q_grid = pooled_shape(self.shape, self.kernel_q, self.stride_q) if self.pools_q else self.shape
        self.k_grid = pooled_shape(self.shape, self.kernel_kv, self.stride_kv) if self.pools_kv else self.shape
        if residual_pool:
            self.register_buffer("grid_rows", grid_rows(self.q_grid, 1), persistent=False)
        if rel_pos:
            spatial, temporal = self.table_lengths(self.shape)
            for axis, length in (("h", spatial), ("w", spatial), ("t", temporal)):
                table = nn.Parameter(torch.zeros(length, self.head_dim))
                nn.init.trunc_normal_(table, std=0.02)
                setattr(self, f"rel_pos_{axis}", table)
            for axis, q_size, k_size in zip("thw", self.q_grid, self.k_grid):
                self.register_buffer(f"index_{axis}", relative_index(q_size, k_size), persistent=False)
            extra = folded_width(self.head_dim, self.k_grid) - self.head_dim
            self.register_buffer("columns", position_columns(self.q_grid, self.k_grid, 1, extra), persistent=False)
            self.register_buffer("key_code", folded_key_code(self.k_grid, 1, extra), persistent=False)
            self.register_buffer("zero_rows", torch.zeros(8, self.head_dim), persistent=False)  # end the stacked table

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
        if self.mode != "conv":
            return pool_tokens(x, shape, prefix, self.mode, kernel, stride)
        weights = [getattr(self, f"pool_{name}").weight for name in names]
        weight = weights[0] if len(weights) == 1 else torch.cat(weights)  # [len(names) * d, 1, *kernel]
        return pool_tokens(x, shape, prefix, self.mode, kernel, stride, weight, parts=len(names), heads=self.num_heads)

    def split_heads(self, x: torch.Tensor, name: str, pooled: bool) -> torch.Tensor:
        """``[B, L, heads * d] -> [B, L, heads, d]``, normalised per head after conv pooling.
        The norm's output keeps the input's dtype: under autocast LayerNorm returns float32,
        which the attention would only cast back, after twice the memory traffic."""
        x = x.unflatten(-1, (self.num_heads, self.head_dim))
        if pooled and self.mode == "conv":
            x = getattr(self, f"norm_{name}")(x).to(x.dtype)
        return x

    def tables(self, q_shape: VideoShape, k_shape: VideoShape) -> list[torch.Tensor]:
        """The ``t``, ``h`` and ``w`` tables, ``[2 * max(q_size, k_size) - 1, d]`` each."""
        return [resize_table(getattr(self, f"rel_pos_{axis}"), 2 * max(q_size, k_size) - 1) for axis, q_size, k_size in zip("thw", q_shape, k_shape)]

    def relative_terms(self, q: torch.Tensor, prefix: int, q_shape: VideoShape, k_shape: VideoShape) -> list[torch.Tensor]:
        """``Q_i . R_axis[axis(i), c]`` for every grid query ``i`` of ``q`` ``[B, heads, P + Lq, d]`` and
        key coordinate ``c`` of each axis (MViTv2 Sec. 4.1): ``[B, heads, T, H, W, kt]``, ``[..., kh]``
        and ``[..., kw]``, with the multiply-accumulates the papers count."""
        known = (q_shape, k_shape) == (self.q_grid, self.k_grid)
        batch, heads = q.shape[:2]
        grid_q = q[:, :, prefix:].reshape(batch, heads, *q_shape, self.head_dim)  # [B, heads, T, H, W, d]
        terms = []
        for axis, table, q_size, k_size, equation in zip("thw", self.tables(q_shape, k_shape), q_shape, k_shape, ("bntxyd,tkd->bntxyk", "bntxyd,xkd->bntxyk", "bntxyd,ykd->bntxyk")):
            index = getattr(self, f"index_{axis}") if known else relative_index(q_size, k_size, table.device)
            terms.append(torch.einsum(equation, grid_q, table[index]))  # table[index]: [q_size, k_size, d]
        return terms

    def relative_rows(self, q: torch.Tensor, prefix: int, q_shape: VideoShape, k_shape: VideoShape, width: int) -> torch.Tensor:
        """``[B, P + Lq, heads, width]``: the relative terms of ``q`` ``[B, P + Lq, heads, d]`` side by
        side (``relative_terms``) in the first ``kt + kh + kw`` columns, zeros elsewhere and for
        prefix queries. One matmul of the queries with every table row and one gather of the rows
        each query needs (``position_columns``): more multiply-accumulates than the papers count
        (every table row), but no copy of the queries and a few launches instead of a dozen."""
        tables = self.tables(q_shape, k_shape)
        rows = sum(table.shape[0] for table in tables)
        # At least one zero row, up to a multiple of 8 rows: aligned rows for the matmul's output.
        table = torch.cat([*tables, self.zero_rows[: 8 - rows % 8]])  # [rows + zeros, d]
        if (q_shape, k_shape, prefix) == (self.q_grid, self.k_grid, 1):
            columns = self.columns
        else:
            columns = position_columns(q_shape, k_shape, prefix, width, q.device)
        products = F.linear(q, table)  # [B, P + Lq, heads, rows + zeros]
        return products.gather(-1, columns[:, None].expand(q.shape[0], -1, q.shape[2], -1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix: int, q_shape: VideoShape, k_shape: VideoShape) -> torch.Tensor:
        """``[B, P + Lq, heads, d]``: softmax attention of ``[B, P + L, heads, d]`` queries, keys and
        values with the relative-position term, either folded into ``q`` and ``k`` or added as a
        bias (``fold_positions``; equal results)."""
        if not self.rel_pos:
            return heads_first(self.core(heads_first(q), heads_first(k), heads_first(v), prefix=prefix, grid=k_shape))
        if not fold_positions(q.device):
            t, h, w = self.relative_terms(heads_first(q), prefix, q_shape, k_shape)
            bias = t[..., :, None, None] + h[..., None, :, None] + w[..., None, None, :]  # [B, heads, T, H, W, kt, kh, kw]
            bias = F.pad(bias.reshape(q.shape[0], q.shape[2], q_shape.num_patches, k_shape.num_patches), (prefix, 0, prefix, 0))
            return heads_first(self.core(heads_first(q), heads_first(k), heads_first(v), prefix=prefix, grid=k_shape, bias=bias))
        # Folded: q_i . k_j / sqrt(d) + E_rel[i, j] = [q_i, r_i] . [c k_j, g onehot(j)] / sqrt(width) with
        # c = sqrt(width / d) and g = sqrt(width), which the core's 1 / sqrt(width) undoes. Both are
        # zero-padded to a multiple of 8 and v to the same width, so that SDPA may pick its flash
        # kernel (equal widths divisible by 8); the scale goes on k, the shorter of the two.
        width = folded_width(self.head_dim, k_shape)
        extra = width - self.head_dim
        q_wide = torch.cat([q, self.relative_rows(q, prefix, q_shape, k_shape, extra)], dim=-1)
        code = self.key_code if (k_shape, prefix) == (self.k_grid, 1) else folded_key_code(k_shape, prefix, extra, k.device)
        # The gain multiplies at run time: a buffer made in float32 would hold it rounded in float64.
        code = (code * math.sqrt(width)).to(k.dtype)[:, None].expand(k.shape[0], -1, k.shape[2], -1)  # [B, P + Lk, heads, width - d]
        k_wide = torch.cat([k * math.sqrt(width / self.head_dim), code], dim=-1)
        v_wide = F.pad(v, (0, extra))
        out = self.core(heads_first(q_wide), heads_first(k_wide), heads_first(v_wide), prefix=prefix, grid=k_shape)
        return heads_first(out)[..., : self.head_dim]

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
        q = self.split_heads(q, "q", self.pools_q)  # [B, P + Lq, heads, d]
        k = self.split_heads(kv[..., :width], "k", self.pools_kv)  # [B, P + Lk, heads, d]
        v = self.split_heads(kv[..., width:], "v", self.pools_kv)
        out = self.attend(q, k, v, prefix, q_shape, k_shape)
        if self.residual_pool:  # Z = Attn + Q on the grid tokens, one kernel, in q's token-major layout
            on_grid = self.grid_rows if (q_shape, prefix) == (self.q_grid, 1) else grid_rows(q_shape, prefix, q.device)
            out = torch.addcmul(out, q, on_grid)
        if torch.compiler.is_exporting():  # an exporter may lower SDPA to a kernel with a heads-first output
            out = out.clone(memory_format=torch.contiguous_format)
        out = out.reshape(batch, -1, width)  # [B, P + Lq, heads * d], a view where out is token-major
        return self.proj_drop(self.proj(out)), q_shape
