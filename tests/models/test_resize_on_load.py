"""Frames and resolution on load, per family: a model loaded (or converted) for another input
computes what the saved model computes at that input, with its tables stored at the new size."""

from __future__ import annotations

import pytest
import torch

import tubelet
from tubelet.convert.lvt import official_arguments

# family -> (tiny architecture, constructor overrides, the new (frames, size))
FAMILIES = {
    "timesformer_divided": ("timesformer_divided_tiny_p8_8x32", {}, (4, 48)),
    "timesformer_space": ("timesformer_space_tiny_p8_8x32", {}, (12, 24)),
    "vivit_1_joint": ("vivit_joint_tiny_p8t2_8x32", {}, (12, 48)),
    "vivit_2_factorised_encoder": ("vivit_factorised_encoder_tiny_p8t2_8x32", {}, (4, 40)),
    "vivit_3_factorised_self": ("vivit_factorised_self_tiny_p8t2_8x32", {}, (12, 24)),
    "vivit_4_factorised_dot": ("vivit_factorised_dot_tiny_p8t2_8x32", {}, (16, 48)),
    "videomae": ("videomae_tiny_p8t2_8x32", {}, (4, 48)),
    "lvt": ("lvt_tiny_p8_8x32", {}, (16, 40)),
    "lvt_linformer": ("lvt_tiny_p8_8x32", {"attention_options": {"variant": "linformer", "linformer_grid": (8, 4, 4),
                                                                  "linformer_proj_len": 8}}, (12, 48)),
    "lvt_official": ("lvt_tiny_p8_8x32", official_arguments(patch_stride=6, mlp_dim=16), (12, 48)),  # overlapping patches
    "xvit": ("xvit_tiny_p8_8x32", {}, (4, 48)),
    "tsm_vit": ("tsm_vit_tiny_p8_8x32", {}, (12, 24)),
    "mvitv2": ("mvitv2_tiny_8x32", {}, (16, 64)),
}


def _clip(frames, size, seed=0):
    return torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def _saved(family, tmp_path):
    name, args, _ = FAMILIES[family]
    torch.manual_seed(0)
    model = tubelet.create_model(name, num_classes=3, **args).eval()
    tubelet.save_model(model, tmp_path / "m", class_names=["a", "b", "c"])
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
def test_loading_for_another_input_computes_the_model_at_that_input(family, tmp_path):
    model = _saved(family, tmp_path)
    frames, size = FAMILIES[family][2]
    resized = tubelet.load_model(tmp_path / "m", num_frames=frames, img_size=size).eval()
    clip = _clip(frames, size)
    with torch.no_grad():
        torch.testing.assert_close(resized(clip), model(clip), rtol=1e-5, atol=1e-5)
    assert resized.config["args"]["num_frames"] == frames and resized.config["args"]["img_size"] == size
    assert (resized.metadata.num_frames, resized.metadata.img_size) == (frames, size)
    assert resized.class_names == ["a", "b", "c"]
    # The tables are stored for the new input: it is the model's own size now, nothing is resampled.
    tubelet.save_model(resized, tmp_path / "r")
    again = tubelet.load_model(tmp_path / "r").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(clip), resized(clip), rtol=0, atol=0)


def test_resized_tables_have_the_new_grid(tmp_path):
    _saved("timesformer_divided", tmp_path)
    resized = tubelet.load_model(tmp_path / "m", num_frames=4, img_size=48)
    assert resized.pos_embed.spatial.shape[1] == 1 + 6 * 6 and resized.pos_embed.temporal.shape[1] == 4
    _saved("xvit", tmp_path)
    resized = tubelet.load_model(tmp_path / "m", num_frames=4, img_size=48)
    assert resized.pos_embed.spatial.shape[1] == 1 + 6 * 6 and resized.pos_embed.temporal.shape[1] == 4
    _saved("mvitv2", tmp_path)
    resized = tubelet.load_model(tmp_path / "m", num_frames=16, img_size=64)
    assert resized.blocks[0].attn.rel_pos_t.shape[0] == 2 * 8 - 1 and resized.blocks[0].attn.rel_pos_h.shape[0] == 2 * 16 - 1


def test_an_input_that_does_not_fit_is_an_error_naming_it(tmp_path):
    _saved("mvitv2", tmp_path)
    with pytest.raises(ValueError, match="16x40x40 clip does not fit.*multiples of 16"):
        tubelet.load_model(tmp_path / "m", num_frames=16, img_size=40)
    _saved("vivit_1_joint", tmp_path)
    with pytest.raises(ValueError, match="7 frames are not divisible by the tubelet depth 2"):
        tubelet.load_model(tmp_path / "m", num_frames=7)
