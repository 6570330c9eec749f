"""XViT's space-time mixing and TSM-ViT's shift against explicit computations written from the
paper's equations: keys and values of frame t built channel by channel from frames t-s .. t+s
by index arithmetic, then attention masked to the frame (outputs and gradients, float64)."""

from __future__ import annotations

import pytest
import torch

from tubelet.attention import get_attention
from tubelet.attention.registry import build_attention
from tubelet.layers.shape import VideoShape

from masks import grouping_key, same, with_prefix
from test_schemes import assert_same_outputs_and_grads

DIM, HEADS = 16, 2


def build(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(1)
    module = get_attention(name)(DIM, HEADS, **options).double()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return module


def fresh_input(num_prefix: int, shape: VideoShape) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, num_prefix + shape.num_patches, DIM, generator=g, dtype=torch.float64, requires_grad=True)


def source_frame_offset(channel: int, fold: int, size: int) -> int:
    """The paper's channel split: shares of ``fold`` channels come from t+1, t-1, t+2, t-2, ...;
    channels past ``2 * size * fold`` stay with frame t."""
    share = channel // fold
    if share >= 2 * size:
        return 0
    return (share // 2 + 1) * (1 if share % 2 == 0 else -1)


def shifted_by_formula(x: torch.Tensor, shape: VideoShape, size: int, div: int) -> torch.Tensor:
    """``out[t, n, c] = x[t + offset(c), n, c]`` (zero outside the clip) over the patch tokens of
    ``[B, P + T*H*W, C]``; prefix tokens unchanged."""
    channels = x.shape[-1]
    fold = channels // div
    p = shape.num_prefix(x.shape[1])
    out = x.clone()
    for c in range(channels):
        offset = source_frame_offset(c, fold, size)
        for t in range(shape.t):
            rows = p + t * shape.spatial + torch.arange(shape.spatial)
            source = t + offset
            out[:, rows, c] = x[:, p + source * shape.spatial + torch.arange(shape.spatial), c] if 0 <= source < shape.t else 0.0
    return out


def on_heads(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` to ``[B, heads, L, d]`` as ``[B, L, heads*d]`` (channels head-major)."""
    batch, heads, length, d = x.shape
    flat = fn(x.transpose(1, 2).reshape(batch, length, heads * d))
    return flat.reshape(batch, length, heads, d).transpose(1, 2)


def frame_mask(shape: VideoShape, num_prefix: int, num_summary: int) -> torch.Tensor:
    """[L, R + L]: patches see their frame and the prefix; prefix sees all; all see the R summaries."""
    mask = with_prefix(same(grouping_key("frame", shape)), num_prefix)
    return torch.cat([torch.ones(mask.shape[0], num_summary, dtype=torch.bool), mask], dim=1)


@pytest.mark.parametrize("summary", [False, True])
@pytest.mark.parametrize("num_prefix", [0, 1])
@pytest.mark.parametrize(
    "shape, size, div", [(VideoShape(3, 3, 5), 1, 4), (VideoShape(4, 1, 3), 1, 2), (VideoShape(5, 3, 3), 2, 8), (VideoShape(5, 2, 1), 2, 4)]
)
def test_xvit_mixing_equals_explicit_shifted_attention(shape, size, div, num_prefix, summary):
    module = build("xvit", temporal_shift_size=size, temporal_shift_div=div, summary=summary)
    step = module.steps[0]
    x = fresh_input(num_prefix, shape)

    def reference(x):
        q, k, v = step.attn.split_heads(step.norm(x))  # [B, heads, L, d]
        keys = on_heads(lambda t: shifted_by_formula(t, shape, size, div), k)
        values = on_heads(lambda t: shifted_by_formula(t, shape, size, div), v)
        num_summary = 0
        if summary:  # mean over each frame's unshifted patch keys / values, seen by every query
            ks = torch.stack([k[:, :, num_prefix + t * shape.spatial : num_prefix + (t + 1) * shape.spatial].mean(2) for t in range(shape.t)], 2)
            vs = torch.stack([v[:, :, num_prefix + t * shape.spatial : num_prefix + (t + 1) * shape.spatial].mean(2) for t in range(shape.t)], 2)
            keys, values, num_summary = torch.cat([ks, keys], 2), torch.cat([vs, values], 2), shape.t
        out = step.attn.core(q, keys, values, mask=frame_mask(shape, num_prefix, num_summary))
        return x + step.attn.merge_heads(out)

    assert_same_outputs_and_grads(module, x, lambda x: module(x, shape)[0], reference)


@pytest.mark.parametrize("div", [2, 8])
def test_tsm_shift_then_frame_attention_equals_explicit_formula(div):
    shape = VideoShape(3, 2, 3)
    module = build("tsm", temporal_shift_div=div)
    step = module.steps[0]
    x = fresh_input(1, shape)

    def reference(x):
        z = shifted_by_formula(x, shape, 1, div)  # Eq. 1
        mask = frame_mask(shape, 1, 0)
        return z + step.attn(step.norm(z), mask=mask)  # Eq. 2

    assert_same_outputs_and_grads(module, x, lambda x: module(x, shape)[0], reference)


def test_tsm_shift_moves_exactly_two_shares():
    """TSM's index formula on a clip whose value encodes (frame, channel)."""
    shape = VideoShape(4, 1, 1)
    module = get_attention("tsm")(DIM, HEADS, temporal_shift_div=8)
    x = (torch.arange(4).view(1, 4, 1) * 100 + torch.arange(DIM).view(1, 1, DIM)).double()
    out = module.residual_shift(x, shape)
    assert out[0, 1, 0] == 200 and out[0, 1, 2] == 2 and out[0, 1, 4] == 104  # from t+1, t-1, kept
    assert out[0, 3, 0] == 0 and out[0, 0, 2] == 0  # zero past the ends


def test_bad_mixing_options_are_one_line_errors_naming_the_argument():
    with pytest.raises(ValueError, match="temporal_shift_div=3 does not divide the width 16"):
        get_attention("xvit")(DIM, HEADS, temporal_shift_div=3)
    with pytest.raises(ValueError, match="temporal_shift_size=3 with temporal_shift_div=4"):
        get_attention("xvit")(DIM, HEADS, temporal_shift_size=3, temporal_shift_div=4)
    module = get_attention("xvit")(DIM, HEADS, temporal_shift_size=2)
    with pytest.raises(ValueError, match="temporal_shift_size=2 mixes a window of 5 frames, wider than the clip's 4"):
        module(torch.randn(1, 4 * 4, DIM), VideoShape(4, 2, 2))
    with pytest.raises(ValueError, match="scheme 'tsm' has no option 'summary'"):
        build_attention("tsm", DIM, HEADS, summary=True)
