"""AWP — adversarial weight perturbation of BatchNorm (paper §IV-B3, Eq. 6, App. B; docs/methods.md §5.4).

Every BN layer's scale and shift become γ·(1 + δ) and β·(1 + ξ) (the NoisyBatchNorm2d form). For
each ε in 0.1, …, 0.9: draw δ, ξ ~ U(−ε, ε) once, then for one epoch over ``D_d`` (batch 128,
augmented) take one signed ascent step of 0.2 on the cross-entropy per batch and project back
onto [−ε, ε] (PGD). The exposed model at ε is the victim with the final (δ, ξ) folded into γ and
β. The ε kept is the smallest whose ``D_d`` accuracy is ≤ 0.30 (the Pruning target), otherwise 0.9.
The perturbation is computed with BN in eval mode (running statistics), so that γ and β are the
only thing that changes.

Choices made (docs/methods.md §9 row 8): the official ``awp.py`` re-draws the noise every batch, never
projects, runs six passes per ε, applies the ε values one after another to the same network in
train mode (so BN running statistics drift on ``D_d``), and leaves the last batch's noise on;
``awp_impl="ebyd"`` reproduces that (``epochs`` then defaults to 6).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ebyd_bench.benchmark.exposures.common import defense_tensors, sweep
from ebyd_bench.benchmark.methods import Exposure, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, PositiveFloat, PositiveFloats, Probability
from ebyd_bench.benchmark.registries import EXPOSURES
from ebyd_bench.benchmark.tensors import augment, batches, normalize

EPSILONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
Noise = dict[str, tuple[torch.Tensor, torch.Tensor]]  # BN name → (δ, ξ)


def affine_batchnorms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """BatchNorm layers with a scale and a shift, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]


def perturbed(model: nn.Module, noise: Noise) -> dict[str, torch.Tensor]:
    """Parameter overrides γ·(1 + δ), β·(1 + ξ) for ``functional_call``."""
    out = {}
    for name, bn in affine_batchnorms(model):
        delta, xi = noise[name]
        out[f"{name}.weight"] = bn.weight.detach() * (1 + delta)
        out[f"{name}.bias"] = bn.bias.detach() * (1 + xi)
    return out


def fold(model: nn.Module, noise: Noise) -> nn.Module:
    """A copy of ``model`` with the perturbation written into its BN weights."""
    net = copy.deepcopy(model)
    with torch.no_grad():
        for name, bn in affine_batchnorms(net):
            delta, xi = noise[name]
            bn.weight.mul_(1 + delta.to(bn.weight.device))
            bn.bias.mul_(1 + xi.to(bn.bias.device))
    return net.eval()


@EXPOSURES.register("awp")
@dataclass
class AdversarialWeightPerturbation(Exposure):
    """Adversarially perturb BN γ, β on D_d (ε 0.1–0.9, projected) until D_d accuracy ≤ 0.30."""

    eps: PositiveFloats = EPSILONS
    lr: PositiveFloat = 0.2
    epochs: Count | None = None  # None → 1 (projected) or 6 (awp_impl="ebyd")
    batch_size: Count = 128
    target_acc: Probability = 0.30
    awp_impl: Literal["projected", "ebyd"] = "projected"

    def expose(self, model: nn.Module, ctx: MethodContext) -> ExposureResult:
        base = copy.deepcopy(model).to(ctx.device).eval()
        work = copy.deepcopy(base)  # the EBYD variant keeps one network across ε values
        gen = ctx.generator(salt=4)
        x_all, y_all = defense_tensors(ctx)
        epochs = self.epochs if self.epochs is not None else (6 if self.awp_impl == "ebyd" else 1)

        def build(eps: float) -> nn.Module:
            net = work if self.awp_impl == "ebyd" else base
            noise = self._noise(net, eps, gen, ctx.device)
            for _ in range(epochs):
                for idx in batches(len(y_all), self.batch_size, gen):
                    if self.awp_impl == "ebyd":
                        noise = self._noise(net, eps, gen, ctx.device)
                    x = normalize(augment(x_all[idx], gen)).to(ctx.device)
                    noise = self._ascent(net, noise, x, y_all[idx].to(ctx.device), eps)
            return fold(net, noise)

        return sweep(self.eps, build, ctx, self.target_acc, "eps")

    def _noise(self, net: nn.Module, eps: float, gen: torch.Generator, device: str) -> Noise:
        """δ, ξ ~ U(−ε, ε) for every BN channel."""
        def draw(bn: nn.Module) -> torch.Tensor:
            return ((torch.rand(bn.num_features, generator=gen) * 2 - 1) * eps).to(device)
        return {name: (draw(bn), draw(bn)) for name, bn in affine_batchnorms(net)}

    def _ascent(self, net: nn.Module, noise: Noise, x: torch.Tensor, y: torch.Tensor, eps: float) -> Noise:
        """One signed gradient-ascent step on the CE; projected onto [−ε, ε] unless ``ebyd``."""
        net.train(self.awp_impl == "ebyd")
        names = list(noise)
        leaves = [t.clone().requires_grad_(True) for name in names for t in noise[name]]
        noise_var = {name: (leaves[2 * i], leaves[2 * i + 1]) for i, name in enumerate(names)}
        loss = F.cross_entropy(functional_call(net, perturbed(net, noise_var), (x,)), y)
        grads = torch.autograd.grad(loss, leaves)
        stepped = [(t + self.lr * g.sign()).detach() for t, g in zip(leaves, grads)]
        if self.awp_impl != "ebyd":
            stepped = [t.clamp(-eps, eps) for t in stepped]
        return {name: (stepped[2 * i], stepped[2 * i + 1]) for i, name in enumerate(names)}
