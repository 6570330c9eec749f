"""Neighbourhood association: shifts against explicit index arithmetic."""

import pytest
import torch

from tubelet.attention.shift import ChannelShift, shift_channels, spatial_offsets, temporal_offsets
from tubelet.layers.shape import VideoShape


def _explicit_shift(grid: torch.Tensor, offsets, fold: int) -> torch.Tensor:
    """Element by element: out[b, t, h, w, c] = grid[b, t+dt, h+dh, w+dw, c] for c in group g, else 0."""
    b_, t_, h_, w_, c_ = grid.shape
    out = torch.zeros_like(grid)
    for b in range(b_):
        for t in range(t_):
            for h in range(h_):
                for w in range(w_):
                    for c in range(c_):
                        group = c // fold
                        if group >= len(offsets):
                            out[b, t, h, w, c] = grid[b, t, h, w, c]
                            continue
                        dt, dh, dw = offsets[group]
                        src = (t + dt, h + dh, w + dw)
                        if 0 <= src[0] < t_ and 0 <= src[1] < h_ and 0 <= src[2] < w_:
                            out[b, t, h, w, c] = grid[b, src[0], src[1], src[2], c]
    return out


def test_offsets():
    assert temporal_offsets(1) == [(1, 0, 0), (-1, 0, 0)]
    assert temporal_offsets(2) == [(1, 0, 0), (-1, 0, 0), (2, 0, 0), (-2, 0, 0)]
    assert len(spatial_offsets(1)) == 8 and len(spatial_offsets(2)) == 24
    assert (0, 0, 0) not in spatial_offsets(2)
    assert set(spatial_offsets(1)) == {(0, dh, dw) for dh in (-1, 0, 1) for dw in (-1, 0, 1)} - {(0, 0, 0)}


@pytest.mark.parametrize(
    "kind, size, div, channels",
    [("temporal", 1, 8, 16), ("temporal", 2, 8, 16), ("temporal", 1, 4, 12), ("spatial", 1, 8, 16), ("spatial", 1, 8, 20), ("spatial", 2, 8, 48)],
)
def test_shift_equals_explicit_index_arithmetic(kind, size, div, channels):
    shape = VideoShape(4, 3, 5)
    g = torch.Generator().manual_seed(channels + size)
    grid = torch.randn(2, *shape, channels, generator=g)
    shift = ChannelShift(kind, size, div)
    fold = channels // div if kind == "temporal" else channels // (2 * len(shift.offsets))
    assert shift.fold(channels) == fold
    expected = _explicit_shift(grid, shift.offsets, fold)
    prefix = torch.randn(2, 1, channels, generator=g)
    x = torch.cat([prefix, grid.reshape(2, -1, channels)], dim=1)  # [B, P + T*H*W, C]
    out = shift(x, shape)
    assert torch.equal(out[:, :1], prefix), "prefix tokens are never shifted"
    torch.testing.assert_close(out[:, 1:].reshape(grid.shape), expected, rtol=0, atol=0)


def test_temporal_shift_matches_lvt_convention():
    """LVT/TSM: the first fold comes from the next frame, the second from the previous one."""
    grid = torch.arange(3, dtype=torch.float32).reshape(1, 3, 1, 1, 1).expand(1, 3, 1, 1, 8).contiguous()  # value = frame index
    out = shift_channels(grid, temporal_offsets(1), fold=1)[0, :, 0, 0]  # [T, C]
    assert out[:, 0].tolist() == [1.0, 2.0, 0.0]  # from t + 1, zero after the last frame
    assert out[:, 1].tolist() == [0.0, 0.0, 1.0]  # from t - 1, zero before the first frame
    assert out[:, 2:].tolist() == grid[0, :, 0, 0, 2:].tolist()


def test_shift_is_parameter_free_and_differentiable():
    x = torch.randn(1, 2 * 2 * 2, 16, requires_grad=True)
    out = ChannelShift("spatial")(x, VideoShape(2, 2, 2))
    out.sum().backward()
    assert x.grad is not None
    assert not isinstance(ChannelShift("temporal"), torch.nn.Module)


def test_bad_shift_options():
    with pytest.raises(ValueError, match="unknown channel shift 'diagonal'"):
        ChannelShift("diagonal")
    with pytest.raises(ValueError, match="size must be >= 1"):
        ChannelShift("spatial", size=0)
    with pytest.raises(ValueError, match="divisor"):
        ChannelShift("temporal", div=0)
    with pytest.raises(ValueError, match="spatial shift of size 2 needs more than 32 channels"):
        ChannelShift("spatial", size=2).fold(32)
    with pytest.raises(ValueError, match="cannot hold"):
        ChannelShift("temporal")(torch.randn(1, 5, 16), VideoShape(2, 2, 2))
