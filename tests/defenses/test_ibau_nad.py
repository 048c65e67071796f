"""I-BAU and NAD as their original code runs them (issue 19; docs/methods.md §7.3-3, §7.3-5).

Pinned here: I-BAU's hypergradient is the implicit one of the original's ``fixed_point``; its
universal perturbation is scaled onto its L2 ball before any unlearning step sees it (the unbounded δ
reached norms of 39–714 and collapsed every model to one class); with it and the ResNet learning rate,
I-BAU keeps a trained model's accuracy on ``D_d``; NAD distils the layer2/3/4 attention maps with the
β of ``bboylyg/NAD`` (500, 1000, 1000); both are deterministic under a seed. Tiny models only.
"""

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, jacrev

from ebyd_bench.benchmark.defenses.ibau import ImplicitBackdoorAdversarialUnlearning as IBAU
from ebyd_bench.benchmark.defenses.nad import NeuralAttentionDistillation as NAD
from ebyd_bench.benchmark.methods import DefenseData, MethodContext
from ebyd_bench.benchmark.models.resnet_cifar import resnet18_narrow
from ebyd_bench.benchmark.tensors import normalize
from ebyd_bench.benchmark.training import TrainRecipe, train_classifier

K = 10


def tiny_factory(**kw):
    return resnet18_narrow(width=8, **kw)


@pytest.fixture(scope="module")
def ctx(cifar):
    """96 training images with their labels as D_d."""
    idx = np.random.default_rng(1).permutation(len(cifar.train))[:96]
    return MethodContext(DefenseData(cifar.train.images[idx], cifar.train.labels[idx], K), seed=0,
                         model_factory=tiny_factory)


@pytest.fixture(scope="module")
def trained(ctx):
    """A width-8 narrow ResNet-18 trained 20 epochs on D_d itself (a third to a half of it right)."""
    recipe = TrainRecipe(name="tiny", epochs=20, batch_size=32, schedule="onecycle")
    torch.manual_seed(0)  # the initial weights, whatever ran before
    return train_classifier(tiny_factory(), ctx.data.images, ctx.data.labels, recipe, 0)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------- I-BAU


def test_ibau_projection_scales_onto_the_l2_ball_and_keeps_the_direction():
    ibau = IBAU(delta_bound=10.0)
    big = torch.full((1, 3, 32, 32), 0.5)  # L2 norm 0.5·√3072 ≈ 27.7
    out = ibau.project(big)
    torch.testing.assert_close(out.norm(), torch.tensor(10.0))
    torch.testing.assert_close(out / out.norm(), big / big.norm())
    small = torch.full((1, 3, 32, 32), 0.1)  # ≈ 5.5, inside the ball: unchanged
    assert torch.equal(ibau.project(small), small)
    assert torch.equal(IBAU(delta_bound=None).project(big), big)
    with pytest.raises(ValueError):
        IBAU(delta_bound=-1.0)


def test_ibau_defaults_bound_the_perturbation_and_use_the_resnet_learning_rate():
    ibau = IBAU()
    assert ibau.delta_bound == 10.0  # the I-BAU notebook's L2 radius, [0, 1] pixel space
    assert ibau.lr == 1e-4  # BackdoorBench's Adam lr for ResNet-18 (the original's 1e-3 is for a small VGG)
    assert (ibau.rounds, ibau.fixed_point_iters, ibau.batch_size, ibau.outer_portion) == (5, 5, 100, 0.01)
    assert ibau.steps == 50  # the original's batches per round: one pass over 5,000 images at batch 100
    assert IBAU.version not in ("1", "2")


def test_ibau_rounds_take_the_originals_number_of_batches_whatever_the_size_of_dd():
    split = [(torch.full((1,), float(i)), torch.zeros(1)) for i in range(5)]  # a 500-image D_d at batch 100
    order = [float(x) for x, _ in IBAU().round_batches(split)]
    assert len(order) == 50 and order[:7] == [0, 1, 2, 3, 4, 0, 1]  # ten passes, in D_d order
    assert [float(x) for x, _ in IBAU(steps=None).round_batches(split)] == [0, 1, 2, 3, 4]  # one pass


def test_ibau_hypergradient_is_the_implicit_gradient_with_k_fixed_point_terms():
    """Against an independent computation with explicit Jacobians (float64, a linear model):
    dL_out/dθ = ∂_θ L_out + (∂_θ Φ)ᵀ Σ_{k<K} (∂_δ Φ)ᵀᵏ ∂_δ L_out,  Φ = δ − η ∇_δ L_in — what the
    original's ``hypergrad.fixed_point`` computes with K fixed-point iterations."""
    gen = torch.Generator().manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).double()
    x = torch.rand(6, 3, 2, 2, generator=gen, dtype=torch.float64)  # the outer batch
    x0 = torch.rand(5, 3, 2, 2, generator=gen, dtype=torch.float64)  # the inner (first) batch
    y, y0 = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([3, 2, 1, 0, 3])
    delta = 0.3 * torch.randn(1, 3, 2, 2, generator=gen, dtype=torch.float64)
    rows = torch.tensor([1, 4])
    ibau = IBAU(fixed_point_iters=3, inner_lr=0.1, delta_reg=0.001)
    params = list(net.parameters())
    got = ibau.hypergradient(net, params, delta, (x0, y0), x, y, rows)

    names = [n for n, _ in net.named_parameters()]
    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    onehot = torch.zeros(6, 1, 1, 1, dtype=torch.float64).index_fill(0, rows, 1.0)

    def f(th, inputs):
        return functional_call(net, th, (normalize(inputs),))

    def outer(d, th):
        return torch.nn.functional.cross_entropy(f(th, x + onehot * d), y)

    def inner(d, th):
        return -torch.nn.functional.cross_entropy(f(th, x0 + d), y0) + 0.001 * d.pow(2).sum()

    def phi(d, th):
        return d - 0.1 * grad(inner)(d, th)

    j_delta = jacrev(phi, argnums=0)(delta, theta).reshape(12, 12)  # ∂Φ/∂δ
    j_theta = jacrev(phi, argnums=1)(delta, theta)  # ∂Φ/∂θ, per parameter
    g_delta = grad(outer, argnums=0)(delta, theta).reshape(12)
    g_theta = grad(outer, argnums=1)(delta, theta)
    v = sum(torch.linalg.matrix_power(j_delta.T, k) @ g_delta for k in range(3))
    for name, g in zip(names, got):
        indirect = torch.einsum("i,i...->...", v, j_theta[name].reshape(12, *theta[name].shape))
        torch.testing.assert_close(g, g_theta[name] + indirect)


def test_ibau_no_unlearning_step_sees_a_perturbation_beyond_its_bound(trained, ctx, monkeypatch):
    """With a step size that throws the fitted δ far outside the ball, every δ handed to the
    hypergradient is on (or inside) the ball, and the record says how far the fit went."""
    seen = []
    original = IBAU.hypergradient

    def spy(self, net, params, delta, *rest):
        seen.append(float(delta.norm()))
        return original(self, net, params, delta, *rest)

    monkeypatch.setattr(IBAU, "hypergradient", spy)
    bound = 2.0
    out = IBAU(rounds=2, batch_size=32, steps=None, delta_lr=1000.0, delta_bound=bound).defend(trained, None, ctx)
    assert len(seen) == 2 * 3 and max(seen) <= bound * (1 + 1e-5)
    assert all(n <= bound * (1 + 1e-5) for n in out.fields["ibau_delta_norms"])
    assert max(out.fields["ibau_delta_norms_fitted"]) > bound  # the projection was needed


def test_ibau_keeps_accuracy_on_defense_data_of_a_trained_model(trained, ctx):
    """With the bound and the ResNet learning rate, D_d accuracy stays within a few points."""
    start = ctx.clean_accuracy(trained)
    assert start >= 0.25
    out = IBAU(rounds=2, batch_size=32, steps=None).defend(trained, None, ctx)
    assert ctx.clean_accuracy(out.model) >= start - 0.05  # it trains on D_d, so it may also rise
    assert out.fields["ibau_dd_acc"][-1] == pytest.approx(ctx.clean_accuracy(out.model), abs=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                    out.model.state_dict().values()))


def test_ibau_is_deterministic_under_a_seed_and_leaves_its_input_alone(trained, ctx):
    before = _state(trained)
    runs = [IBAU(rounds=1, batch_size=32, steps=None).defend(trained, None, ctx) for _ in range(2)]
    assert runs[0].fields == runs[1].fields
    assert all(torch.equal(v, runs[1].model.state_dict()[k]) for k, v in runs[0].model.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())


# ----------------------------------------------------------------------------------- NAD


def test_nad_defaults_are_the_original_codes_layers_betas_and_attention():
    nad = NAD()
    assert nad.layers == ("layer2", "layer3", "layer4")  # the last three residual stages
    assert nad.betas == (500.0, 1000.0, 1000.0)  # bboylyg/NAD config.py beta1..beta3
    assert nad.power == 2.0 and NAD.version != "1"


def test_nad_loss_weights_each_layers_attention_term_by_its_beta():
    nad = NAD()
    g = torch.Generator().manual_seed(0)
    shapes = {"layer2": (4, 8, 16, 16), "layer3": (4, 16, 8, 8), "layer4": (4, 32, 4, 4)}
    student = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    teacher = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    terms = {n: float(nad.attention_loss(student[n], teacher[n])) for n in shapes}
    expected = 500 * terms["layer2"] + 1000 * terms["layer3"] + 1000 * terms["layer4"]
    assert float(nad.distillation_loss(student, teacher)) == pytest.approx(expected, rel=1e-5)
    # a layer whose student and teacher maps agree adds nothing; a zero β drops its layer
    same = dict(student, layer4=teacher["layer4"])
    assert float(nad.distillation_loss(same, teacher)) == pytest.approx(expected - 1000 * terms["layer4"], rel=1e-5)
    only_top = NAD(betas=(0.0, 0.0, 5000.0))
    assert float(only_top.distillation_loss(student, teacher)) == pytest.approx(5000 * terms["layer4"], rel=1e-5)
    # the attention map is normalised, so scaling a feature map leaves the loss unchanged
    scaled = {n: 3 * f for n, f in student.items()}
    assert float(nad.distillation_loss(scaled, teacher)) == pytest.approx(expected, rel=1e-4)


def test_nad_distils_exactly_the_configured_layers(trained, ctx, monkeypatch):
    seen = []
    original = NAD.attention_loss

    def spy(self, s, t):
        seen.append(tuple(s.shape[1:]))
        return original(self, s, t)

    monkeypatch.setattr(NAD, "attention_loss", spy)
    out = NAD(teacher_epochs=1, epochs=1, batch_size=48).defend(trained, None, ctx)
    steps = 2  # 96 images, batch 48
    # width 8: layer2 = 16 channels at 16×16, layer3 = 32 at 8×8, layer4 = 64 at 4×4
    assert seen == [(16, 16, 16), (32, 8, 8), (64, 4, 4)] * steps
    assert out.fields["nad_betas"] == [500.0, 1000.0, 1000.0]
    assert out.fields["nad_layers"] == ["layer2", "layer3", "layer4"]


def test_nad_is_deterministic_under_a_seed(trained, ctx):
    runs = [NAD(teacher_epochs=1, epochs=1).defend(trained, None, ctx) for _ in range(2)]
    assert runs[0].fields == runs[1].fields
    assert all(torch.equal(v, runs[1].model.state_dict()[k]) for k, v in runs[0].model.state_dict().items())
