import pytest
import yaml

from tubelet.engine.config import (RECIPES_DIR, Config, config_to_dict, load_config, resolve_recipe,
                                   save_config)


def _recipe(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


def test_overrides_reach_every_section_and_parse_types(tmp_path):
    recipe = _recipe(tmp_path, "model: {name: timesformer_divided_tiny_p8_8x32, depth: 3}\ntrain: {lr: 1e-3}\n")
    config = load_config(recipe, ["model.depth=4", "model.attention=joint", "train.lr=0.5", "train.max_steps=7",
                                  "data.num_frames=4", "eval.views=[2, 3]", "train.clip_grad=null",
                                  "data.scale=[0.5, 1]", "train.weight_decay=1e-4"])
    assert config.model.name == "timesformer_divided_tiny_p8_8x32"
    assert config.model.args == {"depth": 4, "attention": "joint"}
    assert config.train.lr == 0.5 and config.train.max_steps == 7 and config.train.clip_grad is None
    assert config.train.weight_decay == 1e-4  # YAML reads "1e-4" as a string; float fields parse it
    assert config.data.num_frames == 4 and config.data.scale == (0.5, 1.0)
    assert config.eval.views == (2, 3)
    assert load_config(recipe, ["model=vivit_joint_tiny_p8t2_8x32"]).model.name == "vivit_joint_tiny_p8t2_8x32"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=0.1", "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
        ("data.num_frame=4", "unknown config key 'data.num_frame' (did you mean 'data.num_frames'?)"),
        ("model.dept=4", "unknown config key 'model.dept' (did you mean 'model.depth'?)"),
        ("trian.lr=0.1", "unknown config key 'trian.lr' (did you mean 'train.lr'?)"),
        ("train.epochs=many", "config key 'train.epochs' expects int, got 'many'"),
        ("train.epochs=2.5", "config key 'train.epochs' expects int, got 2.5"),
        ("train.lr=fast", "config key 'train.lr' expects float, got 'fast'"),
        ("model.depth=deep", "config key 'model.depth' expects int, got 'deep'"),
        ("train.compile=1", "config key 'train.compile' expects bool, got 1"),
        ("eval.views=[1, 2, 3]", "config key 'eval.views' expects tuple[int, int], got [1, 2, 3]"),
        ("train.lr", "override 'train.lr' is not of the form key=value"),
        ("model=timesformer_dividd_tiny_p8_8x32", "did you mean timesformer_divided_tiny_p8_8x32"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ValueError) as error:
        load_config(None, [override])
    assert message in str(error.value)


@pytest.mark.parametrize("override, message", [
    ("train.accum_steps=0", "config key 'train.accum_steps' must be >= 1, got 0"),  # was a ZeroDivisionError
    ("train.log_every=0", "config key 'train.log_every' must be >= 1, got 0"),  # ... at the first step
    ("eval.every=0", "config key 'eval.every' must be >= 1, got 0"),  # ... after the first epoch
    ("train.lr=0", "config key 'train.lr' must be > 0, got 0.0"),  # ... in the schedule's min_lr / lr
    ("train.epochs=0", "config key 'train.epochs' must be >= 1, got 0"),  # trained nothing, exit code 0
    ("train.max_steps=0", "config key 'train.max_steps' must be >= 1, got 0"),
    ("train.warmup_epochs=-1", "config key 'train.warmup_epochs' must be >= 0, got -1.0"),  # accepted
    ("train.clip_grad=-1", "config key 'train.clip_grad' must be > 0 (or null: no clipping), got -1.0"),  # accepted
    ("train.label_smoothing=1", "config key 'train.label_smoothing' must be in [0, 1), got 1.0"),
    ("train.betas=[0.9, 1.5]", "config key 'train.betas' must be two numbers in [0, 1), got [0.9, 1.5]"),
    ("train.batch_size=0", "config key 'train.batch_size' must be >= 1, got 0"),  # named no key
    ("eval.batch_size=0", "config key 'eval.batch_size' must be >= 1, got 0"),  # named no key
    ("data.num_workers=-1", "config key 'data.num_workers' must be >= 0, got -1"),  # named no key
    ("data.max_decode_failures=2", "config key 'data.max_decode_failures' must be in [0, 1], got 2.0"),
    ("data.hflip=2", "config key 'data.hflip' must be in [0, 1], got 2.0"),
    ("eval.views=[0, 1]", "config key 'eval.views' must be [T, S] with both >= 1, got [0, 1]"),
    ("train.keep_last=0", "config key 'train.keep_last' must be >= 1, got 0"),
])
def test_values_out_of_range_are_refused_naming_the_key(override, message):
    with pytest.raises(ValueError) as error:
        load_config(None, [override])
    assert str(error.value) == message


def test_fit_checks_a_config_built_in_python(tmp_path):
    import dataclasses

    from tubelet.engine.train import fit

    config = load_config(None)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, log_every=0, device="cpu"))
    with pytest.raises(ValueError, match="config key 'train.log_every' must be >= 1, got 0"):
        fit(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_out_of_range_value_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    from tubelet.cli import main

    assert main(["train", "synth_tiny", "train.log_every=0", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == "tubelet train: error: config key 'train.log_every' must be >= 1, got 0\n"


def test_unknown_key_in_a_recipe_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'train.batchsize' \(did you mean 'train.batch_size'\?\)"):
        load_config(_recipe(tmp_path, "train: {batchsize: 4}\n"))
    with pytest.raises(ValueError, match=r"unknown config key 'evaluation' \(did you mean 'eval'\?\)"):
        load_config(_recipe(tmp_path, "evaluation: {views: [1, 1]}\n"))


def test_saved_config_reads_back_identically(tmp_path):
    config = load_config(None, ["model.depth=3", "eval.views=[2, 3]", "train.lr=0.25"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"] == {
        "name": "timesformer_divided_tiny_p8_8x32", "depth": 3}
    assert config_to_dict(Config())["train"]["lr"] == 0.005


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_validates_and_builds_its_pipeline(path):
    from tubelet.data.transforms import TrainTransform
    from tubelet.engine.inputs import make_sampler

    assert path.read_text().startswith("#"), f"{path.name} must open with a comment on what it reproduces"
    config = load_config(str(path))
    make_sampler(config.data)
    TrainTransform(config.data.img_size, scale=config.data.scale, auto_augment=config.data.auto_augment)


def test_the_paper_recipes_exist():
    names = {p.stem for p in RECIPES_DIR.glob("*.yaml")}
    assert {"timesformer_divided_k400_8x224", "vivit_joint_k400_32x224", "lvt_ssv2_16x224", "xvit_ssv2_16x224", "synth_tiny"} <= names


def test_unknown_recipe_suggests_a_name():
    with pytest.raises(FileNotFoundError, match="did you mean 'synth_tiny'"):
        resolve_recipe("synth_tiyn")
