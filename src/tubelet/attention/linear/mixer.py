"""The linear attention scheme ``attention="linear"``: kernel attention with feature fixation and
neighbourhood association (LVT paper, seed 003), and the linear baselines it is compared with.

One residual sub-layer (``LinearAttentionLayer``) per step of the pattern; in each:

    h = LayerNorm(x);  Q, K, V = split(qkv(h))
    [neighbourhood association: shift K and V]               (Sec. 4.3; before fixation by default)
    Q~, K~ = rho(Q), rho(K)                                  (kernel feature map, Table 5)
    [feature fixation: Q^, K^ = gamma * Q~, gamma * K~]      (Eq. 4 or 5, Table 4)
    [neighbourhood association after fixation: shift K^, V]  (the ordering ablation)
    Y = core(Q^, K^, V)                                      (Eq. 3 within the pattern's groups)
    x = x + DropPath(proj(Y))

``variant`` picks ``rho`` and the core (Table 1, 5 and 9):

| variant | rho | core |
| --- | --- | --- |
| ``relu`` (default), ``elu``, ``sigmoid`` | ReLU + offset, ELU + 1, sigmoid | Eq. 3 |
| ``cosformer`` | ReLU + offset | Eq. 3 on cos re-weighted features |
| ``performer`` | FAVOR+ random features | Eq. 3 |
| ``linformer`` | identity | softmax over compressed keys |
| ``orthoformer`` | identity | softmax through orthogonal landmarks |

Fixation and neighbourhood association compose with every variant (Table 9). ``pattern`` is
``factorised`` (space then time, default), ``joint`` or ``windowed`` (Table 6); ``windowed`` needs a
kernel core. In the factorised pattern the spatial step's keys and values take the temporal shift
and the temporal step's the spatial shift, as in the LVT code (each step gains the neighbours
along the axis it does not attend over); joint and windowed steps take both, temporal first.

Attention dropout (``attn_drop``) drops kernel features of Q and K after fixation, as the LVT
code does (there is no attention matrix to drop). With Performer, fixation sees the features
after FAVOR+'s numerical stabiliser (a per-row and per-head scale that cancels in Eq. 3 but not
in the fixation ratio).
"""

from __future__ import annotations

import torch
from torch import nn

from tubelet.attention.linear.feature_maps import (
    EluPlusOneFeatures,
    IdentityFeatures,
    PerformerFeatures,
    ReLUFeatures,
    SigmoidFeatures,
)
from tubelet.attention.linear.fixation import FeatureFixation
from tubelet.attention.linear.functional import DEFAULT_EPS
from tubelet.attention.linear.kernel import KernelAttention
from tubelet.attention.linear.linformer import LinformerAttention
from tubelet.attention.linear.neighbourhood import NeighbourhoodShift
from tubelet.attention.linear.orthoformer import OrthoformerAttention
from tubelet.attention.linear.patterns import PATTERNS, GroupStep, WindowStep
from tubelet.attention.registry import register_attention
from tubelet.layers.drop_path import DropPath
from tubelet.layers.shape import VideoShape

VARIANTS = ("relu", "elu", "sigmoid", "cosformer", "performer", "linformer", "orthoformer")
FIXATIONS = ("cooperative", "separate", "none")
ASSOCIATION_ORDERS = ("before", "after")


def _shift_heads(x: torch.Tensor, shift: NeighbourhoodShift, shape: VideoShape) -> torch.Tensor:
    """Shift ``[B, heads, L, c]`` over its ``heads * c`` channels, head-major."""
    batch, heads, length, channels = x.shape
    flat = x.transpose(1, 2).reshape(batch, length, heads * channels)  # [B, L, heads*c]
    return shift(flat, shape).reshape(batch, length, heads, channels).transpose(1, 2)


class LinearAttentionLayer(nn.Module):
    """One residual sub-layer ``x + DropPath(proj(core(fix(rho(Q)), fix(rho(K)), V))))`` over the
    groups of ``step``. ``forward(x [B, P + T*H*W, D], shape) -> x``.

    The feature map, fixation (or None), core and shifts are built by ``LinearAttention``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        step: GroupStep | WindowStep,
        feature_map: nn.Module,
        core: nn.Module,
        fixation: FeatureFixation | None,
        shifts: list[NeighbourhoodShift],
        shift_after_fixation: bool,
        qkv_bias: bool,
        attn_drop: float,
        proj_drop: float,
        drop_path: float,
        norm_eps: float,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.step = step
        self.shifts = shifts
        self.shift_after_fixation = shift_after_fixation
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.feature_map = feature_map
        self.fixation = fixation
        self.attn_drop = nn.Dropout(attn_drop)
        self.core = core
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.drop_path = DropPath(drop_path)

    def _shift(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        for shift in self.shifts:
            x = _shift_heads(x, shift, shape)
        return x

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [B, heads, L, d] each
        if not self.shift_after_fixation:
            k, v = self._shift(k, shape), self._shift(v, shape)
        q_feat = self.feature_map(q, is_query=True)  # [B, heads, L, m]
        k_feat = self.feature_map(k, is_query=False)
        if self.fixation is not None:
            q_feat, k_feat = self.fixation(q_feat, k_feat, v)
        q_feat, k_feat = self.attn_drop(q_feat), self.attn_drop(k_feat)
        if self.shift_after_fixation:
            k_feat, v = self._shift(k_feat, shape), self._shift(v, shape)
        out = self.step(self.core, q_feat, k_feat, v, shape)  # [B, heads, L, d]
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))
        return x + self.drop_path(out)

    def extra_repr(self) -> str:
        return f"step={self.step}, shifts={self.shifts}, shift_after_fixation={self.shift_after_fixation}"


@register_attention("linear")
class LinearAttention(nn.Module):
    """Linear video attention (mixer contract): ``forward(x [B, P + T*H*W, D], shape) -> (x, shape)``.

    Defaults are the seed's full model: ReLU kernel, factorised pattern, cooperative fixation
    from concatenated Q, K, V with a shared ratio, temporal and spatial shift of size 1 applied
    before fixation.

    Options (``attention_options`` of the video models):
    - ``variant``: one of ``VARIANTS`` (see the module docstring);
    - ``pattern``: ``factorised`` | ``joint`` | ``windowed``; ``window``: temporal radius of ``windowed``;
    - ``fixation``: ``cooperative`` (Eq. 5) | ``separate`` (Eq. 4) | ``none``;
      ``fixation_inputs``: ``qkv`` | ``qk`` (None: ``qkv`` if cooperative, ``qk`` if separate);
      ``fixation_aggregation``: ``concat`` (None) | ``add`` | ``mul``;
      ``fixation_shared``: one ratio for Q and K;
    - ``temporal_shift``, ``spatial_shift``: neighbourhood association on/off;
      ``temporal_shift_size``, ``temporal_shift_div``, ``spatial_shift_size``: see ``neighbourhood``;
      ``association_order``: ``before`` (default) or ``after`` fixation;
    - ``relu_offset``: added to ReLU features (None = ``head_dim ** -0.5``, the LVT code's);
    - ``performer_features``, ``performer_redraw_interval``: FAVOR+ feature count (None = head
      dim) and redraw period in training steps (None = fixed);
    - ``linformer_proj_len``, ``linformer_grid``: compressed length ``k`` and the reference
      token grid ``(t, h, w)`` its projections are sized for;
    - ``orthoformer_landmarks``: landmark count;
    - ``eps``: floor of the linear attention normaliser.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        variant: str = "relu",
        pattern: str = "factorised",
        window: int = 1,
        fixation: str = "cooperative",
        fixation_inputs: str | None = None,
        fixation_aggregation: str | None = None,
        fixation_shared: bool = True,
        temporal_shift: bool = True,
        spatial_shift: bool = True,
        temporal_shift_size: int = 1,
        temporal_shift_div: int = 8,
        spatial_shift_size: int = 1,
        association_order: str = "before",
        relu_offset: float | None = None,
        performer_features: int | None = None,
        performer_redraw_interval: int | None = None,
        linformer_proj_len: int = 256,
        linformer_grid: tuple[int, int, int] = (16, 14, 14),
        orthoformer_landmarks: int = 64,
        eps: float = DEFAULT_EPS,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by num_heads={num_heads}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown linear attention variant {variant!r}; expected one of {VARIANTS}")
        if pattern not in PATTERNS:
            raise ValueError(f"unknown attention pattern {pattern!r}; expected one of {tuple(PATTERNS)}")
        if fixation not in FIXATIONS:
            raise ValueError(f"unknown feature fixation {fixation!r}; expected one of {FIXATIONS}")
        if association_order not in ASSOCIATION_ORDERS:
            raise ValueError(f"unknown association_order {association_order!r}; expected one of {ASSOCIATION_ORDERS}")
        if pattern == "windowed" and variant in ("linformer", "orthoformer"):
            raise ValueError(f"the windowed pattern needs a kernel variant (relu, elu, sigmoid, cosformer, performer), got {variant!r}")
        head_dim = dim // num_heads
        temporal = NeighbourhoodShift("temporal", temporal_shift_size, temporal_shift_div) if temporal_shift else None
        spatial = NeighbourhoodShift("spatial", spatial_shift_size) if spatial_shift else None
        self.variant = variant
        self.pattern = pattern

        layers = []
        for kind in PATTERNS[pattern]:
            feature_map = self._feature_map(variant, head_dim, relu_offset, performer_features, performer_redraw_interval)
            # Factorised: space gets the temporal shift, time the spatial one; other steps get both.
            shifts = [s for s in {"space": [temporal], "time": [spatial]}.get(kind, [temporal, spatial]) if s is not None]
            # Fail at construction, naming the option, when the width cannot hold the shift.
            shift_width = feature_map.num_features if association_order == "after" else head_dim
            for shift in shifts:
                shift.fold(num_heads * shift_width)
            layers.append(
                LinearAttentionLayer(
                    dim,
                    num_heads,
                    step=WindowStep(window) if kind == "window" else GroupStep(kind),
                    feature_map=feature_map,
                    core=self._core(variant, kind, linformer_grid, linformer_proj_len, orthoformer_landmarks, eps),
                    fixation=None
                    if fixation == "none"
                    else FeatureFixation(
                        feature_map.num_features,
                        head_dim,
                        mode=fixation,
                        inputs=fixation_inputs or ("qk" if fixation == "separate" else "qkv"),
                        aggregation=fixation_aggregation or "concat",
                        shared=fixation_shared,
                    ),
                    shifts=shifts,
                    shift_after_fixation=association_order == "after",
                    qkv_bias=qkv_bias,
                    attn_drop=attn_drop,
                    proj_drop=proj_drop,
                    drop_path=drop_path,
                    norm_eps=norm_eps,
                )
            )
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def _feature_map(variant: str, head_dim: int, relu_offset, performer_features, performer_redraw_interval) -> nn.Module:
        if variant in ("relu", "cosformer"):
            return ReLUFeatures(head_dim, relu_offset)
        if variant == "performer":
            return PerformerFeatures(head_dim, performer_features, performer_redraw_interval)
        maps = {"elu": EluPlusOneFeatures, "sigmoid": SigmoidFeatures, "linformer": IdentityFeatures, "orthoformer": IdentityFeatures}
        return maps[variant](head_dim)

    @staticmethod
    def _core(variant: str, kind: str, linformer_grid, linformer_proj_len: int, orthoformer_landmarks: int, eps: float) -> nn.Module:
        if variant == "linformer":
            t, h, w = linformer_grid
            reference = {"space": (1, h, w), "time": (t, 1, 1), "joint": (t, h, w)}[kind]
            return LinformerAttention(reference, linformer_proj_len)
        if variant == "orthoformer":
            return OrthoformerAttention(orthoformer_landmarks)
        return KernelAttention(cos_reweighting=variant == "cosformer", eps=eps)

    def forward(self, x: torch.Tensor, shape: VideoShape) -> tuple[torch.Tensor, VideoShape]:
        for layer in self.layers:
            x = layer(x, shape)
        return x, shape
