"""Hugging Face -> tubelet conversion: logits equal to Hugging Face's own models, errors that name
the problem, and the ``tubelet convert`` command.

Hugging Face models are built from configs (randomly initialised, no hub), every parameter is
perturbed so that zero-initialised biases, unit norms and zero tables carry information, and the
model is written with ``save_pretrained`` and converted through the folder reader.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    TimesformerConfig,
    TimesformerForVideoClassification,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    VivitConfig,
    VivitForVideoClassification,
)

import tubelet
from tubelet.cli import main
from tubelet.convert.hf import (
    HF_DEFAULTS,
    convert_timesformer,
    convert_hf_module,
    convert_videomae,
    convert_vivit,
    load_converted,
    load_hf_model,
    model_arguments,
    read_hf_config,
    read_hf_weights,
)

FAMILIES = {
    "timesformer": (TimesformerConfig, TimesformerForVideoClassification),
    "vivit": (VivitConfig, VivitForVideoClassification),
    "videomae": (VideoMAEConfig, VideoMAEForVideoClassification),
}
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=16)
CASES = {
    "timesformer_divided": ("timesformer", dict(SMALL, attention_type="divided_space_time", num_frames=4, patch_size=8)),
    "timesformer_divided_wide": ("timesformer", dict(
        hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96, image_size=32,
        num_frames=3, patch_size=8, qkv_bias=False, layer_norm_eps=1e-5,
    )),
    "timesformer_joint": ("timesformer", dict(SMALL, attention_type="joint_space_time", num_frames=3, patch_size=4)),
    "timesformer_space": ("timesformer", dict(SMALL, attention_type="space_only", num_frames=4, image_size=24, patch_size=8)),
    "vivit": ("vivit", dict(SMALL, num_frames=4, tubelet_size=[2, 8, 8])),
    "vivit_deep_tubelets": ("vivit", dict(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128, image_size=16,
        num_frames=6, tubelet_size=[3, 4, 4], num_channels=1,
    )),
    "videomae": ("videomae", dict(SMALL, num_frames=4, tubelet_size=2, patch_size=8)),
    "videomae_no_qv_bias": ("videomae", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192, image_size=32,
        num_frames=6, tubelet_size=3, patch_size=16, qkv_bias=False, hidden_act="gelu_new",  # qv_bias after 5.17
    )),
}


def hf_model(family: str, config: dict, seed: int = 0) -> torch.nn.Module:
    config_cls, model_cls = FAMILIES[family]
    labels = {i: f"class {i}" for i in range(3)}
    torch.manual_seed(seed)
    model = model_cls(config_cls(**config, id2label=labels, label2id={v: k for k, v in labels.items()})).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


def saved(model: torch.nn.Module, folder) -> str:
    model.save_pretrained(folder)
    return str(folder)


def hf_logits(model: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    """Hugging Face logits for a tubelet video ``[B, C, T, H, W]``; space-only TimeSformers
    classify each frame, and their clip logits are the mean over frames."""
    with torch.no_grad():
        logits = model(pixel_values=video.transpose(1, 2)).logits  # HF takes [B, T, C, H, W]
    batch = video.shape[0]
    return logits.reshape(batch, -1, logits.shape[-1]).mean(1)


def random_video(config: dict, batch: int = 2, seed: int = 123) -> torch.Tensor:
    size = config["image_size"]
    return torch.randn(batch, config.get("num_channels", 3), config["num_frames"], size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", CASES)
def test_converted_logits_equal_hugging_face(case, tmp_path):
    family, config = CASES[case]
    reference = hf_model(family, config)
    model = load_hf_model(saved(reference, tmp_path / "hf")).eval()
    video = random_video(config)
    with torch.no_grad():
        logits = model(video)
    expected = hf_logits(reference, video)
    assert logits.shape == expected.shape == (2, 3)
    assert (logits - expected).abs().max().item() <= 1e-4
    assert model.class_names == ["class 0", "class 1", "class 2"]


@pytest.mark.parametrize("case", ["timesformer_divided", "timesformer_space", "vivit_deep_tubelets", "videomae_no_qv_bias"])
def test_live_transformers_models_convert_like_saved_folders(case, tmp_path):
    """``convert_hf_module`` (what ``tubelet bench --compare`` uses) gives the model and logits
    that ``load_hf_model`` gives from the same model's ``save_pretrained`` folder."""
    family, config = CASES[case]
    reference = hf_model(family, config)
    live, folder = convert_hf_module(reference).eval(), load_hf_model(saved(reference, tmp_path / "hf")).eval()
    assert live.config == folder.config and live.class_names == folder.class_names
    video = random_video(config)
    with torch.no_grad():
        assert torch.equal(live(video), folder(video))
        assert (live(video) - hf_logits(reference, video)).abs().max().item() <= 1e-4


def test_a_model_without_classifier_converts_to_features(tmp_path):
    family, config = CASES["videomae"]
    torch.manual_seed(0)
    reference = VideoMAEForVideoClassification(VideoMAEConfig(**config, num_labels=0)).eval()
    model = load_hf_model(saved(reference, tmp_path / "hf")).eval()
    assert model.num_classes == 0 and model.class_names == []
    video = random_video(config)
    with torch.no_grad():
        assert (model(video) - hf_logits(reference, video)).abs().max().item() <= 1e-4


def test_space_only_equals_mean_of_hugging_face_per_frame_logits(tmp_path):
    family, config = CASES["timesformer_space"]
    reference = hf_model(family, config)
    model = load_hf_model(saved(reference, tmp_path / "hf")).eval()
    video = random_video(config)
    with torch.no_grad():
        per_frame = reference(pixel_values=video.transpose(1, 2)).logits
        assert per_frame.shape == (2 * config["num_frames"], 3)
        torch.testing.assert_close(model(video), per_frame.reshape(2, config["num_frames"], 3).mean(1), rtol=0, atol=1e-4)
    assert type(model).__name__ == "FactorisedEncoder" and len(model.temporal_blocks) == 0


@pytest.mark.parametrize("case", ["timesformer_divided", "timesformer_joint", "timesformer_space", "vivit", "videomae"])
def test_registered_architecture_and_arguments_follow_the_config(case, tmp_path):
    family, config = CASES[case]
    model = load_hf_model(saved(hf_model(family, config), tmp_path / "hf"))
    expected_prefix = {"timesformer_divided": "timesformer_divided_", "timesformer_joint": "timesformer_joint_",
                       "timesformer_space": "timesformer_space_", "vivit": "vivit_joint_", "videomae": "videomae_"}[case]
    assert model.config["architecture"].startswith(expected_prefix)
    args = model.config["args"]
    assert (args["embed_dim"], args["depth"], args["num_heads"], args["mlp_ratio"]) == (32, 2, 2, 2.0)
    assert (args["num_frames"], args["img_size"], args["num_classes"]) == (config["num_frames"], config["image_size"], 3)


def test_in_memory_state_dicts_of_transformers_5_convert_like_saved_ones(tmp_path):
    """transformers >= 5 names ViViT's and VideoMAE's parameters differently in memory than on disk."""
    for case, convert in (("vivit", convert_vivit), ("videomae", convert_videomae)):
        family, config = CASES[case]
        reference = hf_model(family, config)
        from_disk = convert(read_hf_weights(saved(reference, tmp_path / case)))
        from_memory = convert(reference.state_dict())
        assert from_disk.keys() == from_memory.keys()
        for key in from_disk:
            torch.testing.assert_close(from_memory[key], from_disk[key], rtol=0, atol=0)


def test_videomae_qkv_bias_has_zero_k_part_and_k_bias_does_not_change_attention(tmp_path):
    family, config = CASES["videomae"]
    reference = hf_model(family, config)
    model = load_hf_model(saved(reference, tmp_path / "hf")).eval()
    bias = model.blocks[0].attn.steps[0].attn.qkv.bias
    dim = config["hidden_size"]
    if not any(name.endswith("key.bias") for name in reference.state_dict()):  # some transformers versions have one
        assert torch.equal(bias[dim : 2 * dim], torch.zeros(dim))
    video = random_video(config)
    with torch.no_grad():
        before = model(video)
        bias[dim : 2 * dim] = torch.randn(dim)
        torch.testing.assert_close(model(video), before, rtol=0, atol=1e-5)


def test_videomae_fc_norm_uses_layernorm_default_eps(tmp_path):
    """HF's fc_norm is LayerNorm(hidden) with eps 1e-5, not layer_norm_eps. On small pooled
    features the eps decides the logits, so an eps of 1e-12 there would fail this comparison."""
    family, config = CASES["videomae"]
    reference = hf_model(family, config)
    with torch.no_grad():  # features of scale 1e-3: variance ~1e-6, comparable to eps 1e-5
        for name, param in reference.named_parameters():
            if "projection" in name or "output.dense" in name:
                param.mul_(1e-3)
    model = load_hf_model(saved(reference, tmp_path / "hf")).eval()
    assert model.norm.eps == 1e-5 and model.blocks[0].mlp_norm.eps == 1e-12
    video = random_video(config)
    with torch.no_grad():
        assert (model(video) - hf_logits(reference, video)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_default_table_matches_transformers_configs(family):
    """transformers 4.x omits default values from config.json; the reader fills in these."""
    defaults = FAMILIES[family][0]().to_dict()
    for key, value in HF_DEFAULTS[family].items():
        assert defaults[key] == value, key


def test_config_without_default_values_converts_the_same(tmp_path):
    family, config = CASES["timesformer_divided"]
    folder = saved(hf_model(family, config), tmp_path / "hf")
    full = read_hf_config(folder)
    path = tmp_path / "hf" / "config.json"
    stored = json.loads(path.read_text())
    defaults = TimesformerConfig().to_dict()
    path.write_text(json.dumps({k: v for k, v in stored.items() if k == "model_type" or defaults.get(k) != v}))
    assert "attention_type" not in json.loads(path.read_text())
    assert model_arguments(read_hf_config(folder)) == model_arguments(full)


def test_base_configs_pick_the_matching_registered_names():
    def name(config) -> str:
        return model_arguments({**config.to_dict(), "model_type": config.model_type})[0]

    assert name(TimesformerConfig()) == "timesformer_divided_base_p16_8x224"
    assert name(TimesformerConfig(image_size=448, num_frames=16)) == "timesformer_divided_base_p16_16x448"
    assert name(TimesformerConfig(attention_type="space_only")) == "timesformer_space_base_p16_8x224"
    assert name(VivitConfig()) == "vivit_joint_base_p16t2_32x224"
    assert name(VideoMAEConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)) == "videomae_large_p16t2_16x224"


def test_sharded_and_bin_weights_are_read(tmp_path):
    family, config = CASES["vivit"]
    state = read_hf_weights(saved(hf_model(family, config), tmp_path / "hf"))
    keys = sorted(state)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    halves = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2 :]}
    for shard, names in halves.items():
        save_file({k: state[k] for k in names}, str(sharded / shard))
    index = {"weight_map": {k: shard for shard, names in halves.items() for k in names}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    binary = tmp_path / "bin"
    binary.mkdir()
    torch.save(state, binary / "pytorch_model.bin")
    for folder in (sharded, binary):
        read = read_hf_weights(folder)
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)


# ----- errors -----


def write_config(folder, **config) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(model_type="videomae", use_mean_pooling=False), r"use_mean_pooling=False"),
        (dict(model_type="vivit", hidden_act="silu"), r"hidden_act='silu'.*gelu_fast"),
        (dict(model_type="timesformer", image_size=[16, 32]), r"image_size=\[16, 32\] is not square"),
        (dict(model_type="vivit", tubelet_size=[2, 8, 4]), r"tubelet_size\[1:\]=\[8, 4\] is not square"),
        (dict(model_type="timesformer", attention_type="axial"), r"attention_type='axial'.*divided_space_time"),
        (dict(model_type="vit"), r"model_type='vit' is not supported.*timesformer"),
        (dict(model_type="videomae", architectures=["VideoMAEForPreTraining"]), r"VideoMAEForPreTraining.*VideoMAEForVideoClassification"),
        (dict(model_type="videomae", hidden_size=44, intermediate_size=49, num_attention_heads=4), r"intermediate_size=49"),
        (dict(model_type="vivit", id2label={"0": "a", "2": "c"}), r"id2label has ids \[0, 2\]"),
    ],
)
def test_unsupported_settings_are_refused_by_name(config, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        load_hf_model(write_config(tmp_path / "hf", **config))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_model(write_config(tmp_path / "hf", model_type="vivit"))


def test_unused_and_unfilled_parameters_are_listed(tmp_path):
    family, config = CASES["timesformer_divided"]
    state = read_hf_weights(saved(hf_model(family, config), tmp_path / "hf"))
    with pytest.raises(ValueError, match=r"no tubelet counterpart: timesformer\.pooler\.dense\.weight"):
        convert_timesformer({**state, "timesformer.pooler.dense.weight": torch.zeros(1)}, "divided_space_time")
    model = tubelet.create_model("timesformer_divided_tiny_p8_8x32", **model_arguments(read_hf_config(tmp_path / "hf"))[1])
    converted = convert_timesformer(state, "divided_space_time")
    del converted["blocks.1.attn.temporal_fc.bias"]
    with pytest.raises(ValueError, match=r"unfilled tubelet parameters: blocks\.1\.attn\.temporal_fc\.bias"):
        load_converted(model, converted)
    # A divided checkpoint read as joint attention leaves temporal weights over and tubelet keys empty.
    with pytest.raises(ValueError, match="no tubelet counterpart: .*temporal_dense"):
        convert_timesformer(state, "joint_space_time")


def test_shape_mismatch_is_named(tmp_path):
    family, config = CASES["vivit"]
    state = convert_vivit(read_hf_weights(saved(hf_model(family, config), tmp_path / "hf")))
    model = tubelet.create_model("vivit_joint_tiny_p8t2_8x32", embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_frames=8, img_size=16, num_classes=3)
    with pytest.raises(ValueError, match=r"shape mismatches: pos_embed\.weight \[1, 9, 32\] \(expected \[1, 17, 32\]\)"):
        load_converted(model, state)


# ----- command line -----


def test_cli_convert_writes_a_loadable_model(tmp_path, capsys):
    family, config = CASES["vivit"]
    reference = hf_model(family, config)
    source = saved(reference, tmp_path / "hf")
    assert main(["convert", source, "--from", "hf", "--out", str(tmp_path / "tubelet")]) == 0
    out = capsys.readouterr().out
    assert "vivit_joint_" in out and "3 classes" in out and "M parameters" in out
    model = tubelet.load_model(tmp_path / "tubelet").eval()
    assert model.class_names == ["class 0", "class 1", "class 2"]
    video = random_video(config)
    with torch.no_grad():
        assert (model(video) - hf_logits(reference, video)).abs().max().item() <= 1e-4
    assert load_file(str(tmp_path / "tubelet" / "model.safetensors")).keys() == model.state_dict().keys()


def test_cli_convert_rejects_unknown_formats_and_bad_sources(tmp_path, capsys):
    assert main(["convert", str(tmp_path), "--from", "timm-ish", "--out", str(tmp_path / "out")]) == 2
    assert "unknown format 'timm-ish'; accepted: hf" in capsys.readouterr().err
    assert main(["convert", str(tmp_path), "--from", "hf", "--out", str(tmp_path / "out")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
