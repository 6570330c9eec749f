"""The linear attention step, with a fused path for the ``triton`` backend.

``LinearAttentionStep`` is an ``AttentionStep`` (``tubelet.attention.step``) of the linear
schemes. With ``functional.set_backend("triton")``, a step whose configuration the fused kernel
covers runs everything between its qkv and output projections as one Triton kernel
(``tubelet.kernels.linear_step``): the neighbourhood shift of K and V, the kernel feature map, the
cooperative feature fixation and Eq. 3 within the step's groups (Lu et al. 2022, Sec. 3.2 and
4.1-4.3, Eq. 3 and 5). Every other configuration, and every other backend, takes the composed
path of ``AttentionStep``; both compute the same function (the backend chooses an
implementation, never a result).

Covered: feature maps ReLU + offset, ELU + 1 and sigmoid with the plain kernel core (no cosFormer
re-weighting); fixation ``cooperative`` from concatenated Q, K, V with one shared ``phi`` or with
``phi_q`` and ``phi_k`` of their own (``fixation_shared=False``, the official LVT configs'
``SHARE_GATE: False``), or none;
groupings ``frame``, ``tube`` and ``joint``; shifts before fixation (at most one of each kind);
no prefix tokens; feature dropout inactive (evaluation, or ``attn_drop=0``).
"""

from __future__ import annotations

import torch

from tubelet.attention.linear import functional
from tubelet.attention.linear.feature_maps import EluPlusOneFeatures, ReLUFeatures, SigmoidFeatures
from tubelet.attention.linear.kernel import KernelAttention
from tubelet.attention.shift import ChannelShift
from tubelet.attention.step import AttentionStep
from tubelet.kernels.linear_step import triton_linear_step
from tubelet.layers.shape import VideoShape

FUSED_FEATURES = {ReLUFeatures: "relu", EluPlusOneFeatures: "elu", SigmoidFeatures: "sigmoid"}
FUSED_GROUPINGS = ("frame", "tube", "joint")


def group_layout(grouping: str, shape: VideoShape) -> tuple[int, int, int, int]:
    """``(groups, length, group_stride, member_stride)`` of a grouping on the time-major grid:
    member ``i`` of group ``g`` is patch token ``g * group_stride + i * member_stride``."""
    if grouping == "frame":
        return shape.t, shape.spatial, shape.spatial, 1
    if grouping == "tube":
        return shape.spatial, shape.t, 1, shape.spatial
    if grouping == "joint":
        return 1, shape.num_patches, 0, 1
    raise ValueError(f"the fused linear attention step has no layout for grouping {grouping!r}; expected one of {FUSED_GROUPINGS}")


def shift_table(shifts: tuple[ChannelShift, ...], channels: int) -> torch.Tensor | None:
    """``[channels, 3]`` int32: the offset ``(dt, dh, dw)`` each channel of K and V is read from,
    the shifts composed (None without shifts). Shifts of different kinds move different axes,
    so their composition reads from the summed offset and is zero exactly where that leaves the
    grid. Built on the CPU whatever the default device, so that its runs of channels can be read
    also while a model is built on ``meta`` (FLOP counts)."""
    if not shifts:
        return None
    table = torch.zeros(channels, 3, dtype=torch.int32, device="cpu")
    for shift in shifts:
        fold = shift.fold(channels)
        for group, offset in enumerate(shift.offsets):
            table[group * fold : (group + 1) * fold] += torch.tensor(offset, dtype=torch.int32, device="cpu")
    return table


def run_length_table(table: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``[channels, 3] -> [channels / run, 3]``: one row per run of ``run`` consecutive channels
    with one offset, ``run`` the largest power of two that divides ``head_dim`` and keeps every
    aligned run's channels together (the kernels then load K and V in vectors of a run)."""
    run = head_dim & -head_dim
    while run > 1 and not torch.equal(table.view(-1, run, 3), table[::run, None].expand(-1, run, 3)):
        run //= 2
    return table[::run].contiguous()


def _fixation_covered(fixation) -> bool:
    """Whether the kernel covers this fixation: none, or cooperative from concatenated Q, K, V."""
    return fixation is None or (fixation.mode, fixation.inputs, fixation.aggregation) == ("cooperative", "qkv", "concat")


def gate_arguments(fixation) -> dict:
    """The kernel's gate arguments of a covered fixation: ``weight, bias`` (the shared ``phi``, or
    ``phi_q``) and ``key_weight, key_bias`` (``phi_k``, when Q and K have their own)."""
    if fixation is None:
        return dict(weight=None, bias=None)
    if fixation.shared:
        return dict(weight=fixation.gate.weight, bias=fixation.gate.bias)
    return dict(weight=fixation.q_gate.weight, bias=fixation.q_gate.bias,
                key_weight=fixation.k_gate.weight, key_bias=fixation.k_gate.bias)


class LinearAttentionStep(AttentionStep):
    """``AttentionStep`` of the linear schemes (same arguments and contract), fused under the
    ``triton`` backend where the configuration is covered (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kinds = [shift.kind for shift in self.shifts]
        self.fusable = (
            type(self.features) in FUSED_FEATURES
            and type(self.attn.core) is KernelAttention and not self.attn.core.cos_reweighting
            and _fixation_covered(self.fixation)
            and self.grouping.name in FUSED_GROUPINGS
            and not self.summary
            and (not self.shifts or (not self.shift_after_fixation and len(set(kinds)) == len(kinds)))
        )
        table = shift_table(self.shifts, self.attn.num_heads * self.attn.head_dim) if self.fusable else None
        if table is not None:  # on the device the step is built on (``torch.device(...)`` blocks too)
            table = run_length_table(table, self.attn.head_dim).to(self.attn.qkv.weight.device)
        self.register_buffer("shift_table", table, persistent=False)

    def uses_fused_kernel(self, x: torch.Tensor, shape: VideoShape) -> bool:
        """Whether ``forward(x, shape)`` runs the fused kernel now."""
        return (
            self.fusable
            and functional.get_backend() == "triton"
            and x.shape[1] == shape.num_patches
            and not (self.training and self.feature_drop.p > 0)
        )

    def forward(self, x: torch.Tensor, shape: VideoShape) -> torch.Tensor:
        if not self.uses_fused_kernel(x, shape):
            return super().forward(x, shape)
        heads, d = self.attn.num_heads, self.attn.head_dim
        qkv = self.attn.qkv(self.norm(x)).unflatten(-1, (3, heads, d))  # [B, L, 3, heads, d]
        out = triton_linear_step(
            qkv, **gate_arguments(self.fixation),
            feature=FUSED_FEATURES[type(self.features)], offset=getattr(self.features, "offset", 0.0), eps=self.attn.core.eps,
            layout=group_layout(self.grouping.name, shape), grid=tuple(shape), shift=self.shift_table,
        )  # [B, L, heads, d]
        return x + self.drop_path(self.attn.merge_heads(out.transpose(1, 2)))
