"""XViT and TSM-ViT models, and the aggregation heads on every backbone."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.models.summary import model_cost

VIDEO = dict(num_frames=4, img_size=16)


def _video(batch=2, frames=4, size=16, seed=0):
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "name, head, extra",
    [
        ("timesformer_divided_tiny_p8_8x32", "cls", {}),
        ("timesformer_divided_tiny_p8_8x32", "mean", {}),
        ("timesformer_divided_tiny_p8_8x32", "frame_mean", {}),
        ("timesformer_divided_tiny_p8_8x32", "taa", {}),
        ("xvit_tiny_p8_8x32", "mean", {}),
        ("xvit_tiny_p8_8x32", "frame_mean", {}),
        ("xvit_tiny_p8_8x32", "taa", {"head_options": {"depth": 2, "mlp_dim": 48}}),
        ("tsm_vit_tiny_p8_8x32", "taa", {}),
        ("timesformer_space_tiny_p8_8x32", "frame_mean", {}),
        ("timesformer_space_tiny_p8_8x32", "taa", {}),
    ],
)
def test_every_head_trains_and_gives_batch_by_classes(name, head, extra):
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=5, head=head, **VIDEO, **extra)
    with torch.no_grad():  # zero-initialised layers (TimeSformer's temporal_fc) would block gradients at step 0
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    logits = model(_video())
    assert logits.shape == (2, 5)
    logits.logsumexp(dim=1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_xvit_summary_and_window_options_build_and_run():
    model = tubelet.create_model(
        "xvit_tiny_p8_8x32", num_classes=3, num_frames=6, img_size=16,
        attention_options={"summary": True, "temporal_shift_size": 2, "temporal_shift_div": 8},
    )
    assert model(_video(frames=6)).shape == (2, 3)


def test_frame_order_matters_to_xvit_and_not_to_the_space_only_model():
    """The space-only model (per-frame encoder, averaged) is blind to frame order; XViT's shifts
    and temporal embedding are not."""
    video = _video()
    reversed_video = video.flip(2)
    for name, blind in (("timesformer_space_tiny_p8_8x32", True), ("xvit_tiny_p8_8x32", False), ("tsm_vit_tiny_p8_8x32", False)):
        torch.manual_seed(0)
        model = tubelet.create_model(name, num_classes=4, **VIDEO).eval()
        same = torch.allclose(model(video), model(reversed_video), atol=1e-5)
        assert same == blind, name


def test_sizes_against_vit_b():
    """A per-frame ViT-B/16 (86.1M with a 400-class head; 17.6 GMACs a 224-px frame) plus, for
    XViT, the TAA head: one block of width 768 and a 768 x 768 MLP layer (+7.7M)."""
    tsm = model_cost("tsm_vit_base_p16_8x224")
    xvit8, xvit16 = model_cost("xvit_base_p16_8x224"), model_cost("xvit_base_p16_16x224")
    assert abs(tsm.params - 86.1e6) < 0.1e6 and abs(xvit8.params - tsm.params - 7.68e6) < 0.05e6
    assert 140 < tsm.gmacs < 141 and 140 < xvit8.gmacs < 141.5
    assert xvit16.gmacs == pytest.approx(2 * xvit8.gmacs, rel=0.01)  # linear in frames
    assert {"xvit_base_p16_8x224", "xvit_base_p16_16x224", "tsm_vit_base_p16_8x224", "xvit_tiny_p8_8x32"} <= set(tubelet.list_models())


def test_bad_heads_and_mixing_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown head 'tta'; did you mean taa"):
        tubelet.create_model("xvit_tiny_p8_8x32", head="tta")
    with pytest.raises(ValueError, match="head='cls' reads the clip's class token; this backbone has one per frame"):
        tubelet.create_model("xvit_tiny_p8_8x32", head="cls")
    with pytest.raises(ValueError, match="head 'mean' has no option 'depth'"):
        tubelet.create_model("xvit_tiny_p8_8x32", head="mean", head_options={"depth": 2})
    with pytest.raises(ValueError, match="temporal_shift_div=3 does not divide the width 64"):
        tubelet.create_model("xvit_tiny_p8_8x32", attention_options={"temporal_shift_div": 3})
    model = tubelet.create_model("xvit_tiny_p8_8x32", attention_options={"temporal_shift_size": 2})
    with pytest.raises(ValueError, match="temporal_shift_size=2 mixes a window of 5 frames, wider than the clip's 4"):
        model(_video())
    with pytest.raises(ValueError, match="ViViT model 2 pools its temporal encoder's class token"):
        tubelet.create_model("vivit_factorised_encoder_tiny_p8t2_8x32", head="taa")
