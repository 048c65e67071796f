"""Detection and removal defenses (issue 4) on tiny models and real CIFAR-10 images.

The NC and STRIP checks use a hand-built backdoored model whose answer is known: it predicts class 0
exactly when the bottom-right 3×3 patch is white, and otherwise the nearest of nine colour
prototypes (so reaching any other class needs a large change of the whole image).
"""

import copy
import math
import statistics

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ebyd_bench.benchmark.defenses.anp import AdversarialNeuronPruning
from ebyd_bench.benchmark.defenses.fp import FinePruning, last_count_above
from ebyd_bench.benchmark.defenses.ibau import ImplicitBackdoorAdversarialUnlearning
from ebyd_bench.benchmark.defenses.masked_bn import batchnorms, split_holdout
from ebyd_bench.benchmark.defenses.nad import NeuralAttentionDistillation
from ebyd_bench.benchmark.defenses.nc import NeuralCleanse, anomaly_index
from ebyd_bench.benchmark.defenses.recover import fold_masks
from ebyd_bench.benchmark.defenses.rp import RecoverPruning
from ebyd_bench.benchmark.defenses.strip import Strip
from ebyd_bench.benchmark.exposures.pruning import prune_units
from ebyd_bench.benchmark.methods import DefenseData, ExposureResult, MethodContext
from ebyd_bench.benchmark.metrics import input_filter_metrics
from ebyd_bench.benchmark.models.resnet_cifar import resnet18_narrow
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.reports.statistics import grid_statistics, label_detection_auroc, model_detection_auroc
from ebyd_bench.benchmark.tensors import CIFAR_MEAN, CIFAR_STD, normalize, to_unit
from ebyd_bench.benchmark.training import TrainRecipe, predict, train_classifier

K = 10


class CornerBackdoor(nn.Module):
    """Class 0 iff the bottom-right 3×3 patch is (nearly) white; else the nearest colour prototype."""

    def __init__(self, num_classes: int = K) -> None:
        super().__init__()
        protos = torch.rand(num_classes - 1, 3, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
        self.register_buffer("protos", protos)
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.std + self.mean  # back to [0, 1] pixels
        corner = 60 * (x[:, :, -3:, -3:].mean((1, 2, 3)) - 0.9)
        colour = -20 * ((x.mean((2, 3))[:, None] - self.protos[None]) ** 2).sum(-1)
        return torch.cat([corner[:, None], colour], 1)


def stamp(images: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[:, -3:, -3:] = 255
    return out


def tiny_factory(**kw) -> nn.Module:
    return resnet18_narrow(width=8, **kw)


@pytest.fixture(scope="module")
def spread(cifar) -> np.ndarray:
    """Training indices in random order (the stored split is sorted by class)."""
    return np.random.default_rng(0).permutation(len(cifar.train))


@pytest.fixture(scope="module")
def ctx(cifar, spread):
    data = DefenseData(cifar.train.images[spread[:64]], cifar.train.labels[spread[:64]], K)
    return MethodContext(data, seed=0, model_factory=tiny_factory)


@pytest.fixture(scope="module")
def tiny_model(cifar, spread):
    """A width-4 narrow ResNet-18 trained 2 epochs on 512 images (so its predictions vary)."""
    recipe = TrainRecipe(name="tiny", epochs=2, batch_size=64, schedule="onecycle")
    idx = spread[1000:1512]
    return train_classifier(tiny_factory(), cifar.train.images[idx], cifar.train.labels[idx], recipe, 0)


@pytest.fixture(scope="module")
def toy():
    return CornerBackdoor().eval()


# ----------------------------------------------------------------------------------- NC


def test_anomaly_index_uses_the_numpy_median_for_even_k():
    l1 = [10.0, 50, 52, 54, 56, 58, 60, 62, 64, 66]
    ai, scores, flagged = anomaly_index(l1)
    med, mad = 57.0, 1.4826 * 5.0  # numpy median (56 + 58) / 2; median |l − 57| = 5
    assert ai == pytest.approx((med - 10) / mad)
    assert scores == pytest.approx([(med - v) / mad for v in l1])
    assert scores[4] > 0  # the lower-middle convention (torch.median → 56) would give 0 here
    assert flagged == [0]


def test_anomaly_index_flags_outliers_in_ascending_norm_order_and_only_above_two():
    ai, scores, flagged = anomaly_index([30, 100, 101, 99, 100, 102, 98, 100, 5, 100])
    assert flagged == [8, 0] and ai == pytest.approx(scores[8])
    ai, _, flagged = anomaly_index([90, 100, 110, 95, 105, 100, 92, 108, 97, 103])
    assert ai < 2 and flagged == []


def test_anomaly_index_mad_zero_cases():
    ai, scores, flagged = anomaly_index([1, 5, 5, 5, 5])
    assert ai == math.inf and flagged == [0] and scores == [math.inf, 0, 0, 0, 0]
    ai, scores, flagged = anomaly_index([5, 5, 5, 9])  # MAD = 0 and min l = med
    assert ai == 0 and flagged == [] and scores == [0, 0, 0, -math.inf]
    assert anomaly_index([3, 3, 3])[:1] == (0.0,)


def test_nc_recovers_the_planted_corner_trigger(toy, ctx):
    out = NeuralCleanse(epochs=50, batch_size=16).defend(toy, None, ctx)
    f = out.fields
    assert out.model is None
    assert f["nc_flagged"] and f["anomaly_index"] >= 2 and f["nc_label"] == 0
    l1 = {int(t): v for t, v in f["nc_mask_l1"].items()}
    assert l1[0] < 15 and all(l1[t] > 10 * l1[0] for t in range(1, K))  # ≈ 9 white pixels suffice
    assert len(f["nc_label_scores"]) == K and f["nc_label_scores"][0] == max(f["nc_label_scores"])
    assert f["model_score"] == f["anomaly_index"] and f["label_scores"] == f["nc_label_scores"]  # standard fields
    mask = out.images["nc_mask"]
    assert mask.shape == (32, 32) and mask[-3:, -3:].sum() > 0.9 * mask.sum()
    pattern = out.images["nc_pattern"]
    assert pattern.shape == (32, 32, 3) and pattern.min() >= 0 and pattern.max() <= 1
    assert pattern[-3:, -3:].mean() > 0.8  # the trigger is white
    assert f["nc_image_label"] == 0 and f["nc_seconds"] > 0


def test_nc_labels_in_lockstep_get_the_triggers_they_get_alone(toy, ctx):
    """One stacked forward pass per step for all labels: each label's own init, batch order, Adam, λ
    schedule and early stop, so the same trigger as alone (epochs differ per label: early stop)."""
    nc = NeuralCleanse(epochs=12, batch_size=16, patience=2, early_stop_patience=2)
    net = copy.deepcopy(toy).eval().requires_grad_(False)
    together = nc.reverse_engineer_all(net, [0, 1, 2], ctx)
    for trigger in together:
        alone = nc.reverse_engineer(net, trigger.label, ctx)
        assert (trigger.label, trigger.epochs, trigger.success) == (alone.label, alone.epochs, alone.success)
        torch.testing.assert_close(trigger.mask, alone.mask, rtol=0, atol=1e-6)
        torch.testing.assert_close(trigger.pattern, alone.pattern, rtol=0, atol=1e-6)
    # the labels stop at different epochs (early stop), and a stopped label is no longer stepped
    assert min(t.epochs for t in together) < nc.epochs == max(t.epochs for t in together)


def test_exposed_nc_runs_only_the_exposed_label_and_decides_on_the_exposure_statistic(toy, ctx):
    shares = [0.91] + [0.01] * (K - 1)
    exposed = ExposureResult(toy, 0, 0.91, shares, [], "ca_min")
    f = NeuralCleanse(epochs=50, batch_size=16).defend(CornerBackdoor(), exposed, ctx).fields
    assert f["nc_label"] == 0 and list(f["nc_mask_l1"]) == ["0"] and f["nc_label_l1"] < 15
    assert f["nc_exposure_var"] == pytest.approx(np.var(shares)) and f["nc_flagged"]  # VAR > 0.01
    assert f["model_score"] == -f["nc_label_l1"] and "label_scores" not in f  # standard fields
    uniform = ExposureResult(toy, 3, 0.1, [0.1] * K, [], "max_epochs")
    f = NeuralCleanse(epochs=2, batch_size=16).defend(toy, uniform, ctx).fields
    assert f["nc_label"] == 3 and not f["nc_flagged"] and "anomaly_index" not in f


# ----------------------------------------------------------------------------------- STRIP


def test_strip_gives_triggered_inputs_lower_entropy(toy, ctx, cifar):
    out = Strip(n_overlays=20).defend(toy, None, ctx)
    assert out.model is None and out.fields["strip_forward_passes_per_input"] == 20
    clean = cifar.test.images[:40]
    s_clean, s_trig = out.input_scorer(clean), out.input_scorer(stamp(clean))
    assert s_clean.shape == (40,) and np.all(s_clean <= 0) and np.all(s_trig <= 0)  # score = −entropy
    # AUROC of triggered vs clean (< 1: a few clean CIFAR images have a bright corner themselves)
    assert np.mean(s_trig[:, None] > s_clean[None, :]) > 0.85
    assert np.median(s_trig) > -1 > np.median(s_clean)


def test_strip_decision_threshold_comes_from_a_normal_fit_to_defense_data(toy, ctx, cifar):
    out = Strip(n_overlays=20, decision_frr=0.05).defend(toy, None, ctx)
    dd_entropy = -out.input_scorer(ctx.data.images)
    expected = statistics.NormalDist(dd_entropy.mean(), dd_entropy.std()).inv_cdf(0.05)
    assert out.fields["strip_entropy_threshold"] == pytest.approx(expected, abs=1e-5)
    assert out.input_threshold == pytest.approx(-expected, abs=1e-5)
    clean = cifar.test.images[:40]
    s_clean, s_trig = out.input_scorer(clean), out.input_scorer(stamp(clean))
    metrics = input_filter_metrics(s_clean, s_trig, out.input_threshold)
    assert metrics["frr"] == np.mean(-s_clean < expected) and metrics["far"] == np.mean(-s_trig >= expected)
    stricter = Strip(n_overlays=20, decision_frr=0.01).defend(toy, None, ctx)
    assert stricter.fields["strip_entropy_threshold"] < expected  # a lower FRR target flags less
    assert Strip(n_overlays=20).defend(toy, None, ctx).input_threshold is None  # off by default
    with pytest.raises(ValueError, match="decision_frr"):
        Strip(decision_frr=1.0)


def test_input_filter_metrics_count_flags_above_the_threshold():
    clean, triggered = np.array([0.1, 0.2, 0.9, 0.4]), np.array([0.8, 0.3, 0.95])
    assert input_filter_metrics(clean, triggered, 0.5) == {"auroc": pytest.approx(9 / 12), "frr": 0.25,
                                                          "far": pytest.approx(1 / 3)}
    assert set(input_filter_metrics(clean, triggered)) == {"auroc"}


def test_strip_scores_each_input_independently_and_excludes_itself(toy, ctx, cifar):
    scorer = Strip(n_overlays=20).defend(toy, None, ctx).input_scorer
    batch = cifar.test.images[:7]
    together = scorer(batch)
    alone = np.array([scorer(batch[i:i + 1])[0] for i in range(7)])
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    np.testing.assert_array_equal(scorer(batch[::-1]), together[::-1])
    member = ctx.data.images[5]
    picks = scorer.overlays(member)
    assert 5 not in picks.tolist() and len(set(picks.tolist())) == 20
    assert scorer.overlays(cifar.test.images[0]).max() < len(ctx.data)


def test_exposed_strip_scores_with_the_exposed_model(toy, ctx, cifar):
    exposed = ExposureResult(toy, 0, 1.0, [1.0] + [0.0] * (K - 1), [], "ca_min")
    plain = Strip(n_overlays=10).defend(CornerBackdoor(num_classes=K).requires_grad_(False), None, ctx)
    x_strip = Strip(n_overlays=10).defend(nn.Sequential(), exposed, ctx)  # θ itself is never called
    assert x_strip.fields["strip_model"] == "theta_b"
    images = stamp(cifar.test.images[:5])
    np.testing.assert_allclose(x_strip.input_scorer(images), plain.input_scorer(images), rtol=1e-6)


# ----------------------------------------------------------------------------------- removal

TINY = {
    "rp": dict(epochs=1),
    "recover": dict(epochs=1),
    "ft": dict(epochs=1),
    "fp": dict(),
    "nad": dict(teacher_epochs=1, epochs=1),
    "anp": dict(iterations=3),
    "ibau": dict(rounds=1, batch_size=32, outer_portion=0.1, steps=None),
}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(TINY))
def test_removal_returns_same_architecture_leaves_input_unchanged_and_is_deterministic(name, tiny_model, ctx):
    before = _state(tiny_model)
    exposed = ExposureResult(tiny_factory().eval(), 0, 0.5, [0.5] + [0.5 / 9] * 9, [], "ca_min")
    defense = DEFENSES.get(name)(**TINY[name])
    assert defense.category == "removal"
    first = defense.defend(tiny_model, exposed, ctx)
    second = DEFENSES.get(name)(**TINY[name]).defend(tiny_model, exposed, ctx)
    assert type(first.model) is type(tiny_model) and first.model is not tiny_model
    out_state, in_state = first.model.state_dict(), tiny_model.state_dict()
    assert {k: v.shape for k, v in out_state.items()} == {k: v.shape for k, v in in_state.items()}
    assert all(torch.equal(before[k], v) for k, v in in_state.items()) and not tiny_model.training
    assert all(torch.equal(v, second.model.state_dict()[k]) for k, v in out_state.items())
    assert first.fields == second.fields
    if name in {"ft", "nad", "ibau", "recover"}:  # the pruning methods may prune nothing at tiny settings
        assert any(not torch.equal(before[k], v) for k, v in out_state.items())
    x = normalize(to_unit(ctx.data.images[:4]))
    assert first.model.eval()(x).shape == (4, K)


def test_recovery_only_equals_the_masked_exposed_model(tiny_model, ctx):
    rp = RecoverPruning(epochs=2, lr=5.0)
    masked = rp.recover_network(tiny_model, ctx.data, ctx)
    plain = fold_masks(masked, ctx)
    masks = torch.cat([p.detach() for n, p in masked.named_parameters() if n.endswith("neuron_mask")])
    assert masks.min() < 0.99  # the masks moved, so the fold is not trivially the identity
    x = normalize(to_unit(ctx.data.images[:16]))
    torch.testing.assert_close(plain(x), masked.eval()(x))
    out = DEFENSES.get("recover")(epochs=2, lr=5.0).defend(tiny_model, None, ctx)
    torch.testing.assert_close(out.model(x), plain(x))
    assert out.fields["recover_source"] == "theta"


def test_fp_stopping_rule_on_a_curve():
    curve = torch.tensor([1.0, 0.9, 0.85, 0.79, 0.95])
    assert last_count_above(curve, 0.8) == 2  # stops at the first drop, even if accuracy recovers
    assert last_count_above(torch.tensor([0.7, 0.9]), 0.8) == 0
    assert last_count_above(torch.tensor([0.9, 0.9, 0.85]), 0.8) == 2


def test_fp_keeps_the_last_model_above_the_accuracy_floor(tiny_model, cifar, spread):
    images = cifar.train.images[spread[:64]]
    own = predict(tiny_model, images)  # labels = the model's own predictions, so D_d accuracy starts at 1
    ctx = MethodContext(DefenseData(images, own, K), seed=0, model_factory=tiny_factory)
    out = FinePruning().defend(tiny_model, None, ctx)
    n = out.fields["fp_pruned"]
    assert out.fields["fp_dd_acc_before"] == 1.0 and 0 < n < out.fields["fp_units"]
    feats = torch.cat([tiny_model.features(normalize(to_unit(images)))]).detach()
    order = torch.argsort(feats.mean(0), stable=True)
    assert ctx.clean_accuracy(prune_units(tiny_model, order[:n], "features")) >= 0.8
    assert ctx.clean_accuracy(prune_units(tiny_model, order[:n + 1], "features")) < 0.8
    assert (out.model.linear.weight[:, order[:n]] == 0).all() and (out.model.linear.weight[:, order[n:]] != 0).all()
    tuned = FinePruning(fp_ft_epochs=1).defend(tiny_model, None, ctx).model
    assert (tuned.linear.weight[:, order[:n]] == 0).all()  # pruned columns stay pruned while fine-tuning
    assert not torch.equal(tuned.linear.weight[:, order[n:]], out.model.linear.weight[:, order[n:]])


def test_anp_masks_stay_in_unit_interval_and_prune_the_original_model(tiny_model, ctx):
    anp = AdversarialNeuronPruning(iterations=3, threshold=0.999)
    masks = anp.learn_masks(tiny_model, ctx)
    flat = torch.cat(masks)
    assert len(masks) == len(batchnorms(tiny_model)) and flat.min() >= 0 and flat.max() <= 1
    assert (flat < 1).any()
    out = anp.defend(tiny_model, None, ctx)
    assert out.fields["anp_pruned"] == int((flat <= 0.999).sum())
    for (_, bn0), (_, bn1), m in zip(batchnorms(tiny_model), batchnorms(out.model), masks):
        assert (bn1.weight[m <= 0.999] == 0).all()
        torch.testing.assert_close(bn1.weight[m > 0.999], bn0.weight[m > 0.999])
        torch.testing.assert_close(bn1.bias, bn0.bias)
    rule = AdversarialNeuronPruning(iterations=2, selection="dd_rule").defend(tiny_model, None, ctx)
    assert len(rule.fields["anp_sweep"]) == 14


def test_ibau_hypergradient_matches_the_explicit_neumann_series():
    """On a linear model over 2×2 images, compare with Hessians and Jacobians formed explicitly:
    dθ = ∂θL_out − η·(∂θ∇δL_in)ᵀ Σ_{k<K} (I − η∇²δL_in)ᵏ ∂δL_out."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    ibau = ImplicitBackdoorAdversarialUnlearning(fixed_point_iters=4, inner_lr=0.1)
    x0, y0 = torch.rand(6, 3, 2, 2, dtype=torch.float64), torch.randint(0, 3, (6,))
    x, y = torch.rand(5, 3, 2, 2, dtype=torch.float64), torch.randint(0, 3, (5,))
    rows = torch.tensor([1, 3])
    delta = torch.randn(1, 3, 2, 2, dtype=torch.float64) * 0.1
    params = list(net.parameters())
    got = ibau.hypergradient(net, params, delta, (x0, y0), x, y, rows)

    w, b = [p.detach() for p in params]

    def logits(inp, w_, b_):
        return normalize(inp).flatten(1) @ w_.T + b_

    def inner(d, w_, b_):
        d = d.view(1, 3, 2, 2)
        return -nn.functional.cross_entropy(logits(x0 + d, w_, b_), y0) + ibau.delta_reg * d.pow(2).sum()

    def outer(d, w_, b_):
        patch = torch.zeros_like(x)
        patch[rows] = d.view(1, 3, 2, 2)
        return nn.functional.cross_entropy(logits(x + patch, w_, b_), y)

    d = delta.flatten()
    hess = torch.func.jacrev(torch.func.grad(inner))(d, w, b)  # reverse over reverse: no forward-mode AD
    g_d, g_w, g_b = torch.func.grad(outer, argnums=(0, 1, 2))(d, w, b)
    mixed = torch.func.jacrev(lambda w_, b_: torch.func.grad(inner)(d, w_, b_), argnums=(0, 1))(w, b)
    v, term = torch.zeros_like(d), g_d.clone()
    for _ in range(ibau.fixed_point_iters):
        v = v + term
        term = term - ibau.inner_lr * hess @ term
    expected_w = g_w - ibau.inner_lr * torch.einsum("i,ijk->jk", v, mixed[0])
    expected_b = g_b - ibau.inner_lr * torch.einsum("i,ij->j", v, mixed[1])
    torch.testing.assert_close(got[0], expected_w)
    torch.testing.assert_close(got[1], expected_b)
    direct = ImplicitBackdoorAdversarialUnlearning(fixed_point_iters=0).hypergradient(
        net, params, delta, (x0, y0), x, y, rows)
    torch.testing.assert_close(direct[0], g_w)  # K = 0: only the direct term


def test_nad_attention_is_a_unit_spatial_map():
    nad = NeuralAttentionDistillation()
    f = torch.randn(2, 8, 4, 4)
    a = nad.attention(f)
    assert a.shape == (2, 16)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2), atol=1e-4, rtol=0)
    assert float(nad.attention_loss(f, f)) == 0 and float(nad.attention_loss(f, torch.randn(2, 8, 4, 4))) > 0
    with pytest.raises(ValueError):
        NeuralAttentionDistillation(betas=(1.0,))


# ----------------------------------------------------------------------------------- registry, summary


def test_every_issue_4_method_is_registered_with_its_category():
    expected = {"nc": "model_inspection", "strip": "input_filtering", "rp": "removal", "recover": "removal",
                "ft": "removal", "fp": "removal", "nad": "removal", "anp": "removal", "ibau": "removal"}
    assert {n: DEFENSES.get(n).category for n in expected} == expected
    assert {n for n in expected if DEFENSES.get(n).uses_exposure} == {"nc", "strip", "rp", "recover"}


def _nc_record(attack, key, exposure=None, **info):
    return {"attack": attack, "cache_key": key, "exposure": exposure, "defense": "nc", "target": 0,
            "defense_info": info}


def test_model_detection_auroc_of_nc_and_exposed_nc():
    # the statistics read the standard detection fields (model_score, label_scores), not NC's own names
    rows = [
        _nc_record("badnets", "m1", model_score=4.0, label_scores=[4.0, 0, 1, -1]),
        _nc_record("blend", "m2", model_score=1.5, label_scores=[0.5, 1.5, 0, -1]),
        _nc_record("none", "c1", model_score=1.0, label_scores=[1.0, 0, 0, 0]),
        _nc_record("none", "c2", model_score=math.inf, label_scores=[0, math.inf, 0, 0]),
        _nc_record("badnets", "m1", "cul", model_score=-5.0),
        _nc_record("blend", "m2", "cul", model_score=-20.0),
        _nc_record("none", "c1", "cul", model_score=-300.0),
        _nc_record("none", "c2", "cul", model_score=-10.0),
        _nc_record("badnets", "m1", "cul", model_score=-5.0),  # the same model twice counts once
        {"attack": "badnets", "cache_key": "m1", "exposure": None, "defense": "rp", "target": 0,
         "defense_info": {"anomaly_index": 99.0}},  # a defense's own names are not detection scores
    ]
    records = pd.DataFrame(rows)
    # nc: positives {4.0, 1.5} vs negatives {1.0, ∞} → 2 of 4 pairs ordered; cul+nc: −L1 {−5, −20} vs {−300, −10}
    assert model_detection_auroc(records) == {"nc": 0.5, "cul+nc": 0.75}
    assert model_detection_auroc(records[records["attack"] != "none"]) == {"nc": None, "cul+nc": None}
    assert model_detection_auroc(records[records["exposure"].isna()]) == {"nc": 0.5}
    assert label_detection_auroc(records) == {"nc": pytest.approx((1.0 + 2 / 3) / 2)}
    stats = grid_statistics(records)
    assert stats["model_detection_auroc"] == {"nc": 0.5, "cul+nc": 0.75} and "exposure_detection_auroc" in stats
    population = stats["model_detection_population"]
    assert population["backdoored"] == 2 and population["clean"] == 2
    assert "rest on 2 clean control(s)" in population["warning"]  # docs/methods.md §6.3 asks for at least 3
    more = pd.DataFrame(rows + [_nc_record("none", "c3", model_score=0.5)])
    assert grid_statistics(more)["model_detection_population"] == {"backdoored": 2, "clean": 3}
    assert model_detection_auroc(pd.DataFrame()) == {} and label_detection_auroc(pd.DataFrame()) == {}


@pytest.mark.e2e
def test_detectors_run_through_the_harness(run_yaml):
    """Fields are JSON-able, NC's trigger images are saved, STRIP's scorer becomes strip_auroc."""
    import json

    records, out = run_yaml(
        "dataset: {name: cifar10, train_subset: 300, test_subset: 100, defense_size: 64}\n"
        "model: {name: resnet18_narrow, params: {width: 8}}\n"
        "recipe: {name: tiny, epochs: 1, batch_size: 64}\n"
        "attacks: [badnets]\nexposures: [none, {name: cul, epochs: 1}]\n"
        "defenses: [{name: nc, epochs: 1}, {name: strip, n_overlays: 8}, fp]\ndetection_eval_size: 40\n")
    recs = {(r["exposure"], r["defense"]): r for r in records}
    plain, exposed = recs[(None, "nc")]["defense_info"], recs[("cul", "nc")]["defense_info"]
    assert len(plain["nc_mask_l1"]) == K and "anomaly_index" in plain
    assert exposed["nc_label"] == recs[("cul", "nc")]["exposed_label"] and len(exposed["nc_mask_l1"]) == 1
    assert all((out / path).is_file() for path in plain["images"].values())
    assert 0 <= recs[("cul", "strip")]["defense_info"]["strip_auroc"] <= 1
    assert recs[(None, "strip")]["defense_info"]["strip_model"] == "theta"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_detection_auroc"] == {"nc": None, "cul+nc": None}  # no clean control in this grid


def test_split_holdout_keeps_the_last_samples_for_the_threshold_rule():
    from ebyd_bench.benchmark.text.common import TextDefenseData

    images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    data = DefenseData(images, np.arange(10) % 3, 3)
    assert split_holdout(data, 0) == (data, data)
    recover, select = split_holdout(data, 4)
    assert len(recover) == 6 and len(select) == 4 and select.num_classes == 3
    assert np.array_equal(select.images, images[6:]) and np.array_equal(recover.labels, data.labels[:6])
    text = TextDefenseData([f"s{i}" for i in range(5)], np.array([0, 1, 0, 1, 1]), 2)
    recover, select = split_holdout(text, 2)
    assert recover.texts == ["s0", "s1", "s2"] and select.texts == ["s3", "s4"]
    with pytest.raises(ValueError, match="leaves no recovery data"):
        split_holdout(text, 5)
