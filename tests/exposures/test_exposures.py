"""The CFT, Pruning and AWP exposures (and the shared contract with CUL) on a small trained model."""

import numpy as np
import pytest
import torch

from ebyd_bench.benchmark.exposures.awp import affine_batchnorms
from ebyd_bench.benchmark.exposures.pruning import mean_activation
from ebyd_bench.benchmark.methods import DefenseData, MethodContext
from ebyd_bench.benchmark.models.resnet_cifar import resnet18_narrow
from ebyd_bench.benchmark.registries import EXPOSURES
from ebyd_bench.benchmark.tensors import to_unit
from ebyd_bench.benchmark.training import TrainRecipe, train_classifier

FAST = {"cul": {"epochs": 2}, "cft": {"epochs": 2, "lr": 1e-3}, "pruning": {}, "awp": {}}


@pytest.fixture(scope="module")
def trained(cifar):
    """A width-8 ResNet-18 fitted to 300 stratified training images; D_d is 100 of them."""
    idx = np.concatenate([np.flatnonzero(cifar.train.labels == c)[:30] for c in range(10)])
    x, y = cifar.train.images[idx], cifar.train.labels[idx]
    torch.manual_seed(0)
    model = train_classifier(resnet18_narrow(width=8), x, y, TrainRecipe(epochs=30, lr=0.05, batch_size=32, augmentation="none"),
                             seed=0)
    dd = np.random.default_rng(0).choice(len(y), 100, replace=False)
    return model.eval(), DefenseData(x[dd], y[dd], 10)


def context(data, seen=None):
    ctx = MethodContext(data, seed=0, model_factory=lambda **kw: resnet18_narrow(width=8, **kw))
    if seen is not None:
        ctx.monitor = lambda step, model: seen.append(step)
    return ctx


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_all_four_exposures_are_registered():
    assert {"cul", "cft", "pruning", "awp"} <= set(EXPOSURES.names())


def test_the_trained_model_fits_the_defense_data(trained):
    model, data = trained
    assert context(data).clean_accuracy(model) > 0.5  # so the D_d ≤ 0.30 rules have work to do


@pytest.mark.parametrize("name", ["cft", "pruning", "awp", "cul"])
def test_exposure_contract(name, trained):
    model, data = trained
    before = state(model)
    seen = []
    result = EXPOSURES.get(name)(**FAST[name]).expose(model, context(data, seen))
    # a label with its share, read off the exposed model on D_d
    assert result.label == int(np.argmax(result.shares)) and result.label_share == max(result.shares)
    assert sum(result.shares) == pytest.approx(1.0)
    # a trace row per step, and the monitor called exactly once per step
    assert [r["step"] for r in result.trace] == seen == list(range(1, len(seen) + 1)) and seen
    for row in result.trace:
        assert {"step", "dd_acc", "dd_loss", "shares"} <= set(row) and len(row["shares"]) == 10
    assert result.stop_reason in {"ca_min", "loss_bound", "max_epochs", "dd_acc_target", "max_level"}
    # the input model is untouched (weights and BN statistics); the exposed one is another object
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.model is not model
    assert set(result.model.state_dict()) == set(before)  # same architecture: the harness reloads it


@pytest.mark.parametrize("name", ["cft", "pruning", "awp"])
def test_exposure_is_deterministic_under_the_seed(name, trained):
    model, data = trained
    a = EXPOSURES.get(name)(**FAST[name]).expose(model, context(data))
    b = EXPOSURES.get(name)(**FAST[name]).expose(model, context(data))
    assert a.trace == b.trace and a.label == b.label and a.stop_reason == b.stop_reason
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sweeps_stop_at_the_first_level_under_the_target(trained):
    model, data = trained
    for name in ("pruning", "awp"):
        result = EXPOSURES.get(name)().expose(model, context(data))
        accs = [r["dd_acc"] for r in result.trace]
        assert all(a > 0.30 for a in accs[:-1])
        assert (accs[-1] <= 0.30) == (result.stop_reason == "dd_acc_target")
        assert len(accs) <= 9


def test_pruning_zeroes_the_most_active_features_first(trained):
    model, data = trained
    result = EXPOSURES.get("pruning")().expose(model, context(data))
    rate = result.trace[-1]["rate"]
    scores = mean_activation(model, to_unit(data.images), "features", "cpu")
    n = int(round(rate * len(scores)))
    zeroed = (result.model.linear.weight == 0).all(0)
    assert int(zeroed.sum()) == n and len(scores) == 64  # 8·width penultimate features
    assert set(torch.topk(scores, n).indices.tolist()) == set(torch.nonzero(zeroed).flatten().tolist())
    torch.testing.assert_close(result.model.linear.weight[:, ~zeroed], model.linear.weight[:, ~zeroed])


def test_pruning_official_variant_zeroes_the_least_active_logits(trained):
    model, data = trained
    result = EXPOSURES.get("pruning")(layer="linear", order="ascending").expose(model, context(data))
    n = int(round(result.trace[-1]["rate"] * 10))
    logits = mean_activation(model, to_unit(data.images), "linear", "cpu")
    dead = torch.nonzero((result.model.linear.weight == 0).all(1) & (result.model.linear.bias == 0)).flatten()
    assert set(dead.tolist()) == set(torch.argsort(logits)[:n].tolist())


def test_awp_perturbation_stays_within_eps_and_touches_only_batchnorm(trained):
    model, data = trained
    result = EXPOSURES.get("awp")().expose(model, context(data))
    eps = result.trace[-1]["eps"]
    exposed = dict(affine_batchnorms(result.model))
    moved = 0.0
    for name, bn in affine_batchnorms(model):
        for orig, new in ((bn.weight, exposed[name].weight), (bn.bias, exposed[name].bias)):
            ok = orig.abs() > 1e-6
            rel = (new[ok] / orig[ok] - 1).abs().detach()
            assert float(rel.max()) <= eps + 1e-5
            moved = max(moved, float(rel.max()))
        torch.testing.assert_close(bn.running_mean, exposed[name].running_mean)
    assert moved > 0.5 * eps  # the signed ascent step reaches the boundary
    non_bn = [k for k in model.state_dict() if "bn" not in k and "shortcut.1" not in k]
    assert all(torch.equal(model.state_dict()[k], result.model.state_dict()[k]) for k in non_bn)


def test_awp_ebyd_variant_and_cft_fixed_labels_run(trained):
    model, data = trained
    ebyd = EXPOSURES.get("awp")(awp_impl="ebyd", eps=(0.1, 0.2), epochs=1).expose(model, context(data))
    assert [r["eps"] for r in ebyd.trace] == [0.1, 0.2][:len(ebyd.trace)]
    fixed = EXPOSURES.get("cft")(cft_labels="fixed", epochs=2, lr=1e-3).expose(model, context(data))
    batch = EXPOSURES.get("cft")(epochs=2, lr=1e-3).expose(model, context(data))
    assert fixed.trace != batch.trace


def test_cul_rnp_stop_rule_watches_the_running_training_accuracy(trained):
    """stop_on="train_accuracy" (the RNP code's rule) stops on the epoch's running accuracy, not D_d's."""
    from ebyd_bench.benchmark.exposures.cul import CleanUnlearning

    model, data = trained
    result = CleanUnlearning(stop_on="train_accuracy", ca_min=0.2, epochs=20, lr=0.05).expose(model, context(data))
    last = result.trace[-1]
    assert 0.0 <= last["train_acc"] <= 1.0
    if result.stop_reason == "ca_min":
        assert last["train_acc"] <= 0.2 and all(r["train_acc"] > 0.2 for r in result.trace[:-1])


def test_cul_adam_option_differs_from_sgd(trained):
    """optimizer="adam" (EBYD's unlearn.py) is a real alternative, not an alias of the SGD default."""
    from ebyd_bench.benchmark.exposures.cul import CleanUnlearning

    model, data = trained
    sgd = CleanUnlearning(epochs=1).expose(model, context(data))
    adam = CleanUnlearning(epochs=1, optimizer="adam", lr=1e-4).expose(model, context(data))
    w_sgd, w_adam = sgd.model.state_dict()["conv1.weight"], adam.model.state_dict()["conv1.weight"]
    assert not torch.equal(w_sgd, w_adam)
    assert adam.trace[0]["dd_loss"] > 0
