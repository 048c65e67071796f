"""ANP — Adversarial Neuron Pruning (Wu & Wang 2021; paper App. B; docs/methods.md §7.3-4).

Every BN layer becomes a :class:`NoisyBatchNorm2d` with a per-channel mask m (init 1) and noise
(δ, ξ): perturbed scale γ·(m + δ) and shift β·(1 + ξ); unperturbed γ·m and β. Per iteration, on a
batch of 128 drawn with replacement from augmented ``D_d`` (model in train mode, as ANP's code):

1. δ, ξ ~ U(−ε, ε); one signed ascent step of size ε on the CE, then clamp to [−ε, ε] (the EBYD
   copy clamps; ANP's original does not);
2. masks: SGD (lr 0.2, momentum 0.9) on α·CE(unperturbed) + (1 − α)·CE(perturbed), clamp to [0, 1].

After ``iterations`` (2000) the ORIGINAL θ is pruned, γ_k := 0 for m_k ≤ ``threshold`` (0.2, the ANP
paper's default, *unverified*), or with ``selection="dd_rule"`` by RP's ``D_d``-only rule (§7.1-6).
The test-ASR-based threshold choice of other suites is never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.defenses.common import defense_tensors, swap_norm
from ebyd_bench.benchmark.defenses.masked_bn import UnitSelection, mask_step, pruning_result
from ebyd_bench.benchmark.defenses.rp import prune, select_by_dd_rule
from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat, Probability
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.benchmark.tensors import augment, normalize, to_device

NOISY_PARAMS = ("neuron_mask", "neuron_noise", "neuron_noise_bias")


class NoisyBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with a per-channel mask on γ and multiplicative noise on γ and β (ANP's layer)."""

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.neuron_mask = nn.Parameter(torch.ones(num_features))
        self.neuron_noise = nn.Parameter(torch.zeros(num_features))
        self.neuron_noise_bias = nn.Parameter(torch.zeros(num_features))
        self.perturbed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.perturbed:
            weight = self.weight * (self.neuron_mask + self.neuron_noise)
            bias = self.bias * (1 + self.neuron_noise_bias)
        else:
            weight, bias = self.weight * self.neuron_mask, self.bias
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, use_batch_stats,
                            self.momentum if self.momentum is not None else 0.0, self.eps)


@DEFENSES.register("anp")
@dataclass
class AdversarialNeuronPruning(UnitSelection, Defense):
    """Learn BN masks robust to adversarial neuron noise (ε 0.4, α 0.2), prune m ≤ 0.2 on θ."""

    eps: NonNegativeFloat = 0.4
    alpha: Probability = 0.2
    lr: PositiveFloat = 0.2
    momentum: NonNegativeFloat = 0.9
    iterations: Count = 2000
    batch_size: Count = 128
    selection: Literal["dd_rule", "threshold", "fraction"] = "threshold"  # ANP prunes m ≤ 0.2 by default

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        masks = self.learn_masks(model, ctx)
        chosen, fields = self.choose(
            masks, lambda: select_by_dd_rule(model, masks, ctx, self.thresholds, self.max_acc_drop), "anp")
        return pruning_result(model, masks, chosen, fields, "anp", lambda units: prune(model, units))

    def learn_masks(self, model: nn.Module, ctx: MethodContext) -> list[torch.Tensor]:
        """ANP's mask optimisation on D_d; one mask tensor per BN layer, in module order."""
        net = swap_norm(model, ctx, NoisyBatchNorm2d, NOISY_PARAMS)
        layers = [m for m in net.modules() if isinstance(m, NoisyBatchNorm2d)]
        masks = [bn.neuron_mask for bn in layers]
        noise = [p for bn in layers for p in (bn.neuron_noise, bn.neuron_noise_bias)]
        opt = torch.optim.SGD(masks, lr=self.lr, momentum=self.momentum)
        gen = ctx.generator(salt=16)
        x_all, y_all = defense_tensors(ctx)
        x_dev, y_dev = x_all.to(ctx.device), y_all.to(ctx.device)  # D_d uploaded once, augmented there
        net.train()
        for _ in range(self.iterations):
            idx = to_device(torch.randint(0, len(y_all), (self.batch_size,), generator=gen), ctx.device)  # with replacement
            x, y = normalize(augment(x_dev[idx], gen)), y_dev[idx]
            self._adversarial_noise(net, layers, noise, x, y, gen)
            _set_perturbed(layers, True)
            loss_rob = F.cross_entropy(net(x), y)
            _set_perturbed(layers, False)
            mask_step(opt, self.alpha * F.cross_entropy(net(x), y) + (1 - self.alpha) * loss_rob, masks)
        return [m.detach().cpu().clone() for m in masks]

    def _adversarial_noise(self, net: nn.Module, layers: list[NoisyBatchNorm2d], noise: list[nn.Parameter],
                           x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
        """Fresh δ, ξ ~ U(−ε, ε), one signed ascent step of ε on the CE, clamp to [−ε, ε]."""
        with torch.no_grad():
            for p in noise:
                p.copy_(to_device((torch.rand(p.shape, generator=gen) * 2 - 1) * self.eps, p.device))
        _set_perturbed(layers, True)
        grads = torch.autograd.grad(F.cross_entropy(net(x), y), noise)
        with torch.no_grad():
            for p, g in zip(noise, grads):
                p.add_(self.eps * g.sign()).clamp_(-self.eps, self.eps)


def _set_perturbed(layers: list[NoisyBatchNorm2d], on: bool) -> None:
    for bn in layers:
        bn.perturbed = on
