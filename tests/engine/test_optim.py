import pytest
import torch

from tubelet.engine.config import TrainConfig
from tubelet.engine.ema import ModelEma
from tubelet.engine.optim import build_optimizer, param_groups


def _group_of(groups, name):
    return next(g for g in groups if name in g["names"])


def test_weight_decay_skips_norms_biases_and_listed_names(tiny_net):
    groups = param_groups(tiny_net, weight_decay=0.05, layer_decay=1.0)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    assert decayed == {"embed.weight", "blocks.0.weight", "blocks.1.weight", "head.weight"}
    assert _group_of(groups, "pos_embed")["weight_decay"] == 0.0  # a 2-d tensor, skipped by name
    assert sum(len(g["params"]) for g in groups) == len(list(tiny_net.parameters()))


def test_layer_decay_scales(tiny_net):
    groups = param_groups(tiny_net, weight_decay=0.0, layer_decay=0.5)
    # num_layers = 2: head/norm (layer 3) full lr, block 1 (layer 2) 0.5, block 0 0.25, embeddings 0.125
    assert _group_of(groups, "head.weight")["lr_scale"] == 1.0
    assert _group_of(groups, "blocks.1.weight")["lr_scale"] == 0.5
    assert _group_of(groups, "blocks.0.bias")["lr_scale"] == 0.25
    assert _group_of(groups, "embed.weight")["lr_scale"] == 0.125
    optimizer = build_optimizer(tiny_net, TrainConfig(optimizer="adamw", lr=0.1, layer_decay=0.5))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([0.0125, 0.025, 0.05, 0.1])


def test_sgd_has_momentum_and_unknown_optimizer_is_named(tiny_net):
    optimizer = build_optimizer(tiny_net, TrainConfig(optimizer="sgd", momentum=0.9))
    assert optimizer.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="'lamb'"):
        build_optimizer(tiny_net, TrainConfig(optimizer="lamb"))


def test_ema_follows_the_formula(tiny_net):
    ema = ModelEma(tiny_net, decay=0.9)
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    with torch.no_grad():
        for p in tiny_net.parameters():
            p.add_(1.0)
    ema.update(tiny_net)
    for name, value in ema.state_dict().items():
        torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * (before[name] + 1.0))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_adamw_on_cpu_parameters_is_the_default_implementation_over_the_same_groups(tiny_net):
    """Off CUDA ``adamw`` is ``torch.optim.AdamW`` as it is (the fused choice is CUDA's, tested on
    the GPU machine), keeping each group's own options."""
    from tubelet.engine.optim import adamw

    groups = param_groups(tiny_net, weight_decay=0.05, layer_decay=1.0)
    optimizer = adamw(groups, lr=0.1, betas=(0.9, 0.95))
    assert not optimizer.defaults["fused"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [g["weight_decay"] for g in groups]
    assert optimizer.defaults["betas"] == (0.9, 0.95)
