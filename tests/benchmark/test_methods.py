"""Exposure and defense building blocks on small models and real images."""

import numpy as np
import pytest
import torch
from torch import nn

from ebyd_bench.benchmark.defenses.masked_bn import MaskedBatchNorm2d, at_most, batchnorms, lowest_fraction
from ebyd_bench.benchmark.defenses.rp import RecoverPruning, prune
from ebyd_bench.benchmark.exposures.cul import CleanUnlearning
from ebyd_bench.benchmark.methods import DefenseData, MethodContext
from ebyd_bench.benchmark.models.resnet_cifar import resnet18, resnet18_narrow


def test_resnet18_matches_the_reference_architecture():
    model = resnet18()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # docs/methods.md §2.1
    bns = batchnorms(model)
    assert len(bns) == 20 and sum(bn.num_features for _, bn in bns) == 4_800
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_too_thin_resnet_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="width 4 is below 8: oneDNN"):
        resnet18_narrow(width=4)


def test_masked_bn_with_unit_mask_equals_bn():
    torch.manual_seed(0)
    plain = resnet18_narrow(width=8).eval()
    masked = resnet18_narrow(width=8, norm_layer=MaskedBatchNorm2d).eval()
    masked.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(plain(x), masked(x))


def test_prune_zeroes_gamma_below_threshold_and_keeps_beta():
    torch.manual_seed(0)
    model = resnet18_narrow(width=8)
    for _, bn in batchnorms(model):
        nn.init.uniform_(bn.bias, 0.5, 1.0)
    masks = [torch.linspace(0, 1, bn.num_features) for _, bn in batchnorms(model)]
    pruned = prune(model, at_most(masks, 0.3))
    for (_, before), (_, after), m in zip(batchnorms(model), batchnorms(pruned), masks):
        assert (after.weight[m <= 0.3] == 0).all()
        torch.testing.assert_close(after.weight[m > 0.3], before.weight[m > 0.3])
        torch.testing.assert_close(after.bias, before.bias)
    assert any((bn.weight != 0).all() for _, bn in batchnorms(model))  # original untouched
    ablation = prune(model, at_most(masks, 0.3), prune_bias=True)  # docs/methods.md §7.1-4's ablation
    for (_, before), (_, after), m in zip(batchnorms(model), batchnorms(ablation), masks):
        assert (after.bias[m <= 0.3] == 0).all() and torch.equal(after.bias[m > 0.3], before.bias[m > 0.3])


def test_fraction_selection_prunes_the_lowest_masks_with_ties_in_layer_order():
    masks = [torch.tensor([0.5, 0.0, 0.9]), torch.tensor([[0.0, 0.2], [0.0, 1.0]])]
    chosen = lowest_fraction(masks, 0.5)  # ⌊0.5 · 7⌋ = 3 units: the three zeros, layer order first
    assert [c.tolist() for c in chosen] == [[False, True, False], [[True, False], [True, False]]]
    assert [c.shape for c in chosen] == [m.shape for m in masks]
    four = lowest_fraction(masks, 4 / 7)  # the fourth is the 0.2, before the 0.5 of the first layer
    assert four[1][0, 1] and not four[0][0]
    assert sum(int(c.sum()) for c in lowest_fraction(masks, 0.0)) == 0
    with pytest.raises(ValueError, match="fraction"):
        lowest_fraction(masks, 1.5)


def test_rp_fraction_mode_prunes_that_share_of_channels_and_needs_a_fraction(small_ctx):
    from ebyd_bench.benchmark.specs import MethodSpec, build_method
    from ebyd_bench.benchmark.errors import ConfigError
    from ebyd_bench.benchmark.registries import DEFENSES

    with pytest.raises(ConfigError, match="selection 'fraction' needs 0 < fraction < 1"):
        build_method(DEFENSES, MethodSpec.parse({"name": "rp", "selection": "fraction"}), "defenses[0]")
    torch.manual_seed(0)
    model = resnet18_narrow(width=8).eval()
    out = RecoverPruning(epochs=1, selection="fraction", fraction=0.1).defend(model, None, small_ctx)
    total = sum(bn.num_features for _, bn in batchnorms(model))
    assert out.fields["rp_pruned"] == total // 10 and out.fields["rp_fraction"] == 0.1
    zeroed = sum(int((bn.weight == 0).sum()) for _, bn in batchnorms(out.model))
    assert zeroed == total // 10


@pytest.fixture(scope="module")
def small_ctx(cifar):
    data = DefenseData(cifar.train.images[:128], cifar.train.labels[:128], 10)
    return MethodContext(data, seed=0, model_factory=lambda **kw: resnet18_narrow(width=8, **kw))


def test_cul_raises_the_clean_loss_and_records_a_trace(small_ctx):
    torch.manual_seed(0)
    model = resnet18_narrow(width=8).eval()
    seen = []
    small_ctx.monitor = lambda step, m: seen.append(step)
    result = CleanUnlearning(epochs=3, lr=0.05).expose(model, small_ctx)
    assert [r["step"] for r in result.trace] == seen and 1 <= len(seen) <= 3
    assert result.trace[-1]["dd_loss"] > result.trace[0]["dd_loss"] or result.stop_reason != "max_epochs"
    assert result.label == int(np.argmax(result.shares)) and result.label_share == max(result.shares)
    assert result.stop_reason in {"ca_min", "loss_bound", "max_epochs"}
    assert result.model is not model


def test_rp_threshold_rule_reads_only_defense_data(small_ctx):
    torch.manual_seed(0)
    model = resnet18_narrow(width=8).eval()
    rp = RecoverPruning(epochs=1)
    out = rp.defend(model, None, small_ctx)
    info = out.fields
    assert info["rp_masks_total"] == sum(bn.num_features for _, bn in batchnorms(model))
    if info["rp_threshold"] is not None:
        acc0 = small_ctx.clean_accuracy(model)
        chosen = [s for s in info["rp_sweep"] if s["t"] == info["rp_threshold"]][0]
        assert chosen["dd_acc"] >= round(acc0 - rp.max_acc_drop, 4) - 1e-4
        later = [s for s in info["rp_sweep"] if s["t"] > info["rp_threshold"]]
        assert all(s["dd_acc"] < acc0 - rp.max_acc_drop for s in later)


def test_bf16_recipe_trains_float32_weights_deterministically():
    """precision="bf16" autocasts the forward pass only: weights stay float32, runs repeat exactly."""
    import numpy as np

    from ebyd_bench.benchmark.training import TrainRecipe, train_classifier

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 64)

    def train(precision):
        torch.manual_seed(0)
        recipe = TrainRecipe(epochs=1, batch_size=32, augmentation="none", precision=precision)
        return train_classifier(resnet18_narrow(width=8), x, y, recipe, seed=0).state_dict()

    runs, fp32 = [train("bf16"), train("bf16")], train("fp32")
    assert all(v.dtype == fp32[k].dtype for k, v in runs[0].items())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["conv1.weight"], fp32["conv1.weight"])


def test_compiled_training_repeats_exactly_returns_the_plain_model_and_keys_only_when_on():
    """recipe.compile wraps the training steps in torch.compile: runs repeat exactly, the weights stay
    those of the eager loop up to rounding, the model handed back (and cached) is the plain module, and
    the mode enters the cache key only when it is not "off" (keys of earlier caches stay valid)."""
    from dataclasses import asdict

    import numpy as np
    from torch import nn

    from ebyd_bench.benchmark.cache import key_stable
    from ebyd_bench.benchmark.training import TrainRecipe, train_classifier

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 48)

    def train(mode):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        recipe = TrainRecipe(epochs=2, batch_size=32, augmentation="flip", compile=mode)
        return train_classifier(net, x, y, recipe, seed=0)

    compiled, again, eager = train("default"), train("default"), train("off")
    assert type(compiled) is nn.Sequential
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in compiled.state_dict().items())
    assert all(torch.allclose(v.float(), eager.state_dict()[k].float(), atol=1e-4)
               for k, v in compiled.state_dict().items())
    assert "compile" not in key_stable(asdict(TrainRecipe()))
    assert key_stable(asdict(TrainRecipe(compile="default")))["compile"] == "default"
