"""The ``linear`` attention scheme against an explicit quadratic re-implementation of each
grouping, plus Linformer and Orthoformer against their explicit formulas."""

import math

import pytest
import torch

from tubelet.attention.linear import LinearAttention
from tubelet.attention.linear.linformer import LinformerAttention
from tubelet.attention.linear.orthoformer import landmark_attention, orthoformer_attention, orthogonal_landmark_indices
from tubelet.attention.registry import get_attention
from tubelet.layers.shape import VideoShape

SHAPE = VideoShape(3, 2, 3)
DIM, HEADS = 32, 2


def _coords(shape: VideoShape, p: int):
    """(t, h, w) of every token; prefix tokens get -100 so that they match nothing."""
    t, h, w = torch.meshgrid(torch.arange(shape.t), torch.arange(shape.h), torch.arange(shape.w), indexing="ij")
    pad = torch.full((p,), -100)
    return [torch.cat([pad, c.flatten()]) for c in (t, h, w)]


def _mask(kind: str, shape: VideoShape, p: int, radius: int = 1) -> torch.Tensor:
    """Who attends to whom, written out: [L, L] boolean."""
    t, h, w = _coords(shape, p)
    same = {
        "frame": t[:, None] == t[None, :],
        "tube": (h[:, None] == h[None, :]) & (w[:, None] == w[None, :]),
        "joint": torch.ones(len(t), len(t), dtype=torch.bool),
        "band": (t[:, None] - t[None, :]).abs() <= radius,
    }[kind]
    same[:p, :] = True  # prefix queries see everything
    same[:, :p] = True  # every query sees the prefix
    return same


def _cos_weights(kind: str, shape: VideoShape, p: int) -> torch.Tensor:
    """cosFormer's cos(pi (i - j) / 2M) with positions counted inside each attending sequence."""
    length = p + shape.num_patches
    t, h, w = _coords(shape, p)
    index = torch.arange(length)
    if kind == "frame":  # sequence [prefix, frame patches]
        local, size = torch.where(index < p, index, p + h * shape.w + w), p + shape.spatial
    elif kind == "tube":  # sequence [prefix, tube patches]
        local, size = torch.where(index < p, index, p + t), p + shape.t
    else:
        local, size = index, length
    pos = (local + 1).double()
    weights = torch.cos(math.pi / 2 * (pos[:, None] - pos[None, :]) / size)
    full = index.double() + 1  # prefix queries attend over the whole clip, M = P + N
    weights[:p] = torch.cos(math.pi / 2 * (full[:p, None] - full[None, :]) / length)
    return weights


def _explicit_layer(layer, x: torch.Tensor, shape: VideoShape, kind: str, cos: bool, radius: int) -> torch.Tensor:
    """One sub-layer with the attention matrix materialised."""
    batch, length, dim = x.shape
    p = length - shape.num_patches
    q, k, v = layer.attn.qkv(layer.norm(x)).reshape(batch, length, 3, HEADS, dim // HEADS).permute(2, 0, 3, 1, 4)
    if not layer.shift_after_fixation:
        k, v = layer.shift(k, shape), layer.shift(v, shape)
    qf, kf = layer.features(q, is_query=True), layer.features(k, is_query=False)
    if layer.fixation is not None:
        qf, kf = layer.fixation(qf, kf, v)
    if layer.shift_after_fixation:
        kf, v = layer.shift(kf, shape), layer.shift(v, shape)
    scores = qf @ kf.transpose(-2, -1)  # [B, heads, L, L]
    if cos:
        scores = scores * _cos_weights(kind, shape, p)
    scores = scores * _mask(kind, shape, p, radius)
    out = scores / scores.sum(dim=-1, keepdim=True) @ v
    return x + layer.attn.proj(out.transpose(1, 2).reshape(batch, length, dim))


def _explicit(mixer, x, shape, cos=False, radius=1):
    for layer in mixer.steps:
        x = _explicit_layer(layer, x, shape, layer.grouping.name, cos, radius)
    return x


FACTORISED, JOINT, BAND = ("frame", "tube"), ("joint",), ("band",)
CASES = [
    ("relu", FACTORISED, {}),
    ("relu", JOINT, {}),
    ("relu", BAND, {"band_radius": 1}),
    ("elu", FACTORISED, {"fixation": "separate"}),
    ("sigmoid", BAND, {"band_radius": 0, "association_order": "after"}),
    ("performer", FACTORISED, {"performer_features": 16, "fixation_aggregation": "add"}),
    ("cosformer", FACTORISED, {}),
    ("cosformer", JOINT, {"fixation": "none"}),
    ("cosformer", BAND, {"band_radius": 1, "spatial_shift": False}),
]


@pytest.mark.parametrize("prefix", [0, 1])
@pytest.mark.parametrize("variant, groupings, options", CASES)
def test_mixer_equals_explicit_quadratic_attention(variant, groupings, options, prefix):
    torch.manual_seed(0)
    mixer = LinearAttention(DIM, HEADS, variant=variant, groupings=groupings, **options).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, prefix + SHAPE.num_patches, DIM, generator=g, dtype=torch.float64, requires_grad=True)
    out, shape = mixer(x, SHAPE)
    assert shape == SHAPE
    expected = _explicit(mixer, x, SHAPE, cos=variant == "cosformer", radius=options.get("band_radius", 1))
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-10)
    grad = torch.randn_like(out)
    params = [x] + list(mixer.parameters())
    for a, b in zip(torch.autograd.grad(out, params, grad), torch.autograd.grad(expected, params, grad)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("variant", ["relu", "elu", "sigmoid", "cosformer", "performer", "linformer", "orthoformer"])
@pytest.mark.parametrize("na, ff", [(False, False), (True, False), (False, True), (True, True)])
def test_table9_every_variant_composes_with_na_and_ff(variant, na, ff):
    mixer = LinearAttention(
        DIM, HEADS, variant=variant, fixation="cooperative" if ff else "none",
        temporal_shift=na, spatial_shift=na,
        **(dict(linformer_grid=(3, 2, 3), linformer_proj_len=4) if variant == "linformer" else {}),
    )
    x = torch.randn(2, 1 + SHAPE.num_patches, DIM, requires_grad=True)
    out, _ = mixer(x, SHAPE)
    out.square().mean().backward()
    assert out.shape == x.shape and torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert any(isinstance(m, torch.nn.Linear) and m.in_features != DIM for m in mixer.modules()) == ff


def test_association_order_changes_the_result():
    torch.manual_seed(0)
    before = LinearAttention(DIM, HEADS)
    after = LinearAttention(DIM, HEADS, association_order="after")
    after.load_state_dict(before.state_dict())
    x = torch.randn(1, SHAPE.num_patches, DIM)
    assert not torch.allclose(before(x, SHAPE)[0], after(x, SHAPE)[0])


def test_registered_and_bad_options():
    assert get_attention("linear") is LinearAttention
    with pytest.raises(ValueError, match="unknown linear attention variant 'softmax'"):
        LinearAttention(DIM, HEADS, variant="softmax")
    with pytest.raises(ValueError, match="unknown grouping 'divided'"):
        LinearAttention(DIM, HEADS, groupings=("divided",))
    with pytest.raises(ValueError, match="band grouping needs a kernel variant"):
        LinearAttention(DIM, HEADS, variant="orthoformer", groupings=("band",))
    with pytest.raises(ValueError, match="option 'performer_features' belongs to the linear variants \\['performer'\\], not to variant='relu'"):
        LinearAttention(DIM, HEADS, performer_features=8)
    with pytest.raises(ValueError, match="association_order"):
        LinearAttention(DIM, HEADS, association_order="during")
    with pytest.raises(ValueError, match="not divisible"):
        LinearAttention(30, 4)
    with pytest.raises(ValueError, match="spatial shift of size 2 needs more than 32 channels"):
        LinearAttention(DIM, HEADS, spatial_shift_size=2)
    with pytest.raises(ValueError, match="band radius"):
        LinearAttention(DIM, HEADS, groupings=("band",), band_radius=-1)
    with pytest.raises(ValueError, match="cannot hold"):
        LinearAttention(DIM, HEADS)(torch.randn(1, 5, DIM), SHAPE)


def test_linformer_equals_explicit_projection():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 1 + 6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    lin = LinformerAttention((1, 2, 3), proj_len=5).double()
    out = lin(q, k, v, prefix=1, grid=(1, 2, 3))
    e, f = lin.key_proj.reshape(5, 6), lin.value_proj.reshape(5, 6)
    keys = torch.cat([k[..., :1, :], e @ k[..., 1:, :]], dim=-2)
    values = torch.cat([v[..., :1, :], f @ v[..., 1:, :]], dim=-2)
    expected = torch.softmax(q @ keys.transpose(-2, -1) / 2.0, dim=-1) @ values
    torch.testing.assert_close(out, expected)


def test_linformer_resamples_projections_keeping_total_weight():
    lin = LinformerAttention((2, 2, 2), proj_len=3)
    with torch.no_grad():
        lin.key_proj.fill_(0.5)
    e, f = lin.projections((4, 3, 2))
    assert e.shape == (3, 24) and f.shape == (3, 24)
    torch.testing.assert_close(e.sum(dim=1), torch.full((3,), 0.5 * 8))
    with pytest.raises(ValueError, match="Linformer got 5 patch keys"):
        lin(torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4), prefix=0, grid=(2, 2, 2))
    with pytest.raises(ValueError, match="proj_len"):
        LinformerAttention((2, 2, 2), proj_len=0)


def test_landmark_attention_equals_explicit_matrix():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 4, generator=g, dtype=torch.float64) for _ in range(3))
    landmarks = q[:, [2, 5, 7]]
    a = torch.softmax(q @ landmarks.transpose(-2, -1) / 2.0, dim=-1) @ torch.softmax(landmarks @ k.transpose(-2, -1) / 2.0, dim=-1)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 9, dtype=torch.float64))  # rows of the implied L x L matrix sum to 1
    torch.testing.assert_close(landmark_attention(q, k, v, landmarks), a @ v)


def test_orthogonal_landmarks_pick_orthogonal_queries():
    eye = torch.eye(4)
    # Largest norm first (3 * e0), then the least aligned: e1, e2, e3; near-duplicates of e0 are skipped.
    q = torch.stack([eye[0] * 3, eye[0] + 0.01 * eye[1], eye[1], eye[0] * 2 + 0.1 * eye[2], eye[2], eye[3] * 0.5]).unsqueeze(0)
    assert orthogonal_landmark_indices(q, 4).tolist() == [[0, 2, 4, 5]]
    assert orthogonal_landmark_indices(q, 64).shape == (1, 6)  # fewer queries than landmarks: all of them
    assert sorted(orthogonal_landmark_indices(q, 64)[0].tolist()) == list(range(6))
    out = orthoformer_attention(q, q, q, num_landmarks=4)
    assert out.shape == q.shape
