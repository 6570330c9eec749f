"""The linear attention scheme ``attention="linear"``: kernel attention with feature fixation and
neighbourhood association (LVT paper, seed 003), and the linear baselines it is compared with.

One residual ``LinearAttentionStep`` (an ``AttentionStep`` of ``tubelet.attention.step`` that the
``triton`` backend runs as one fused kernel where it can, ``tubelet.attention.linear.fused``) per
grouping; in each:

    h = LayerNorm(x);  Q, K, V = split(qkv(h))
    [neighbourhood association: shift K and V]               (Sec. 4.3; before fixation by default)
    Q~, K~ = rho(Q), rho(K)                                  (kernel feature map, Table 5)
    [feature fixation: Q^, K^ = gamma * Q~, gamma * K~]      (Eq. 4 or 5, Table 4)
    [neighbourhood association after fixation: shift K^, V]  (the ordering ablation)
    Y = core(Q^, K^, V)                                      (Eq. 3 within the grouping's groups)
    x = x + DropPath(proj(Y))

``variant`` picks ``rho`` and the core (Table 1, 5 and 9) from the table ``VARIANTS``:

| variant | rho | core | its own options |
| --- | --- | --- | --- |
| ``relu`` (default), ``elu``, ``sigmoid`` | ReLU + offset, ELU + 1, sigmoid | Eq. 3 | ``relu_offset`` (relu), ``eps`` |
| ``cosformer`` | ReLU + offset | Eq. 3 on cos re-weighted features | ``relu_offset``, ``eps`` |
| ``performer`` | FAVOR+ random features | Eq. 3 | ``performer_features``, ``performer_redraw_interval``, ``eps`` |
| ``linformer`` | identity | softmax over compressed keys | ``linformer_proj_len``, ``linformer_grid`` |
| ``orthoformer`` | identity | softmax through orthogonal landmarks | ``orthoformer_landmarks`` |

An option of another variant is a ValueError naming it.

Fixation and neighbourhood association compose with every variant (Table 9). ``groupings`` names
the steps (``tubelet.attention.grouping``); Table 6's patterns are ``("frame", "tube")`` (factorised,
space then time, the default), ``("joint",)`` and ``("band",)`` (windowed: frames ``t - band_radius
.. t + band_radius``, kernel cores only). A ``frame`` step's keys and values take the temporal
shift and a ``tube`` step's the spatial shift, as in the LVT code (each step gains the neighbours
along the axis it does not attend over); other steps take both, temporal first.

Attention dropout (``attn_drop``) drops kernel features of Q and K after fixation, as the LVT
code does (there is no attention matrix to drop). With Performer, fixation sees the features
after FAVOR+'s numerical stabiliser (a per-row and per-head scale that cancels in Eq. 3 but not
in the fixation ratio).
"""


from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from tubelet.attention.grouping import GROUPINGS, Grouping
from tubelet.attention.linear.feature_maps import (
    EluPlusOneFeatures,
    IdentityFeatures,
    PerformerFeatures,
    ReLUFeatures,
    SigmoidFeatures,
)
from tubelet.attention.linear.fixation import FeatureFixation
from tubelet.attention.linear.fused import LinearAttentionStep
from tubelet.attention.linear.functional import DEFAULT_EPS
from tubelet.attention.linear.kernel import KernelAttention
from tubelet.attention.linear.linformer import LinformerAttention
from tubelet.attention.linear.orthoformer import OrthoformerAttention
from tubelet.attention.registry import register_attention
from tubelet.attention.shift import ChannelShift
from tubelet.attention.step import GroupedAttention
from tubelet.layers.shape import VideoShape

FIXATIONS = ("cooperative", "separate", "none")
ASSOCIATION_ORDERS = ("before", "after")


@dataclass(frozen=True)
class Variant:
    """One row of the variant table: builders of ``rho`` (from the head width) and of the core
    (from the step's grouping), both given the variant's own options with defaults applied."""

    features: Callable[[int, dict], nn.Module]
    core: Callable[[Grouping, dict], nn.Module]
    defaults: dict = field(default_factory=dict)


def _kernel_core(grouping: Grouping, options: dict) -> nn.Module:
    return KernelAttention(eps=options["eps"])


def _linformer_core(grouping: Grouping, options: dict) -> nn.Module:
    reference = grouping.group_grid(VideoShape(*options["linformer_grid"]))
    return LinformerAttention(tuple(reference), options["linformer_proj_len"])


VARIANTS: dict[str, Variant] = {
    "relu": Variant(lambda d, o: ReLUFeatures(d, o["relu_offset"]), _kernel_core, {"relu_offset": None, "eps": DEFAULT_EPS}),
    "elu": Variant(lambda d, o: EluPlusOneFeatures(d), _kernel_core, {"eps": DEFAULT_EPS}),
    "sigmoid": Variant(lambda d, o: SigmoidFeatures(d), _kernel_core, {"eps": DEFAULT_EPS}),
    "cosformer": Variant(
        lambda d, o: ReLUFeatures(d, o["relu_offset"]),
        lambda g, o: KernelAttention(cos_reweighting=True, eps=o["eps"]),
        {"relu_offset": None, "eps": DEFAULT_EPS},
    ),
    "performer": Variant(
        lambda d, o: PerformerFeatures(d, o["performer_features"], o["performer_redraw_interval"]),
        _kernel_core,
        {"performer_features": None, "performer_redraw_interval": None, "eps": DEFAULT_EPS},
    ),
    "linformer": Variant(
        lambda d, o: IdentityFeatures(d), _linformer_core, {"linformer_proj_len": 256, "linformer_grid": (16, 14, 14)},
    ),
    "orthoformer": Variant(
        lambda d, o: IdentityFeatures(d), lambda g, o: OrthoformerAttention(o["orthoformer_landmarks"]), {"orthoformer_landmarks": 64},
    ),
}
VARIANT_OPTIONS = sorted({name for variant in VARIANTS.values() for name in variant.defaults})


def variant_options(variant: str, given: dict) -> dict:
    """The options of ``variant`` with its defaults for those not given (None = not given);
    a given option of another variant is a ValueError naming it and its variants."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown linear attention variant {variant!r}; expected one of {tuple(VARIANTS)}")
    own = VARIANTS[variant].defaults
    for name, value in given.items():
        if value is not None and name not in own:
            owners = [v for v, row in VARIANTS.items() if name in row.defaults]
            raise ValueError(f"option {name!r} belongs to the linear variants {owners}, not to variant={variant!r}")
    return {name: default if given.get(name) is None else given[name] for name, default in own.items()}


@register_attention("linear")
class LinearAttention(GroupedAttention):
    """Linear video attention (mixer contract): ``forward(x [B, P + T*H*W, D], shape) -> (x, shape)``.

    Defaults are the seed's full model: ReLU kernel, factorised space-then-time groupings,
    cooperative fixation from concatenated Q, K, V with a shared ratio, temporal and spatial
    shift of size 1 applied before fixation.

    Options (``attention_options`` of the video models):
    - ``variant``: a key of ``VARIANTS``, with its own options (see the module docstring);
    - ``groupings``: names from ``tubelet.attention.grouping``; ``band_radius``: of ``band``;
    - ``fixation``: ``cooperative`` (Eq. 5) | ``separate`` (Eq. 4) | ``none``;
      ``fixation_inputs``: ``qkv`` | ``qk`` (None: ``qkv`` if cooperative, ``qk`` if separate);
      ``fixation_aggregation``: ``concat`` (None) | ``add`` | ``mul``;
      ``fixation_shared``: one ratio for Q and K;
    - ``temporal_shift``, ``spatial_shift``: neighbourhood association on/off;
      ``temporal_shift_size``, ``temporal_shift_div``, ``spatial_shift_size``: see ``tubelet.attention.shift``;
      ``association_order``: ``before`` (default) or ``after`` fixation;
    - ``relu_offset``: added to ReLU features (None = ``head_dim ** -0.5``, the LVT code's);
    - ``performer_features``, ``performer_redraw_interval``: FAVOR+ feature count (None = head
      dim) and redraw period in training steps (None = fixed);
    - ``linformer_proj_len``, ``linformer_grid``: compressed length ``k`` (256) and the reference
      token grid ``(t, h, w)`` its projections are sized for (16 x 14 x 14);
    - ``orthoformer_landmarks``: landmark count (64);
    - ``eps``: floor of the kernel attention normaliser.
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
        groupings: tuple[str, ...] = ("frame", "tube"),
        band_radius: int = 1,
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
        linformer_proj_len: int | None = None,
        linformer_grid: tuple[int, int, int] | None = None,
        orthoformer_landmarks: int | None = None,
        eps: float | None = None,
    ):
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by num_heads={num_heads}")
        options = variant_options(variant, dict(
            relu_offset=relu_offset, performer_features=performer_features,
            performer_redraw_interval=performer_redraw_interval, linformer_proj_len=linformer_proj_len,
            linformer_grid=linformer_grid, orthoformer_landmarks=orthoformer_landmarks, eps=eps,
        ))
        if isinstance(groupings, str) or not groupings:
            raise ValueError(f"groupings must be a non-empty list of names from {GROUPINGS}, got {groupings!r}")
        if fixation not in FIXATIONS:
            raise ValueError(f"unknown feature fixation {fixation!r}; expected one of {FIXATIONS}")
        if association_order not in ASSOCIATION_ORDERS:
            raise ValueError(f"unknown association_order {association_order!r}; expected one of {ASSOCIATION_ORDERS}")
        head_dim = dim // num_heads
        temporal = ChannelShift("temporal", temporal_shift_size, temporal_shift_div) if temporal_shift else None
        spatial = ChannelShift("spatial", spatial_shift_size) if spatial_shift else None
        row = VARIANTS[variant]

        steps = []
        for name in groupings:
            grouping = Grouping(name, radius=band_radius)
            features = row.features(head_dim, options)
            core = row.core(grouping, options)
            if name == "band" and not core.supports_band:
                raise ValueError(f"the band grouping needs a kernel variant (relu, elu, sigmoid, cosformer, performer), got {variant!r}")
            # A frame step gets the temporal shift, a tube step the spatial one, others both.
            shifts = [s for s in {"frame": [temporal], "tube": [spatial]}.get(name, [temporal, spatial]) if s is not None]
            # Fail at construction, naming the option, when the width cannot hold the shift.
            shift_width = features.num_features if association_order == "after" else head_dim
            for shift in shifts:
                shift.fold(num_heads * shift_width)
            steps.append(LinearAttentionStep(
                dim, num_heads, grouping,
                qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, drop_path=drop_path, norm_eps=norm_eps,
                core=core, features=features,
                fixation=None if fixation == "none" else FeatureFixation(
                    features.num_features, head_dim, mode=fixation,
                    inputs=fixation_inputs or ("qk" if fixation == "separate" else "qkv"),
                    aggregation=fixation_aggregation or "concat", shared=fixation_shared,
                ),
                shifts=tuple(shifts), shift_after_fixation=association_order == "after",
            ))
        super().__init__(steps)
        self.variant = variant
        self.groupings = tuple(groupings)
