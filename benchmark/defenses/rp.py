"""EBYD-RP — Recover-Pruning (paper §V-C, Alg. 2; docs/methods.md §7.1).

1. Recovery: on the exposed model θ_b, learn one mask value per BN channel (γ·m, β untouched) by
   minimising α·CE on augmented ``D_d`` (SGD lr 0.2, momentum 0.9, batch 128, 20 epochs, train-mode
   BN, masks clamped to [0, 1] after every step). Channels the backdoor needs recover least.
2. Pruning on the ORIGINAL model θ: γ_k := 0 for every channel with m_k ≤ t.

Which channels are pruned (``selection``, docs/methods.md §7.1-5/6): ``dd_rule`` (default) is the project's
defender-only dynamic threshold — the largest t in {0.05, …, 0.70} whose pruned model keeps ``D_d``
accuracy ≥ acc₀ − ``max_acc_drop``; ``threshold`` prunes m ≤ the fixed ``threshold``; ``fraction``
prunes the ⌊``fraction`` · N⌋ channels with the lowest masks (ties by layer order; RNP's
``--pruning-by number`` with a count of ⌊f · N⌋). None of them reads test or poisoned data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.defenses.common import swap_norm
from ebyd_bench.benchmark.defenses.masked_bn import (MaskedBatchNorm2d, Selection, UnitSelection, batchnorms, dd_rule,
                                          mask_step, pruning_result, split_holdout)
from ebyd_bench.benchmark.methods import Defense, DefenseData, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, NonNegativeInt, PositiveFloat
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.benchmark.tensors import augment, batches, normalize, to_unit


#: the paper's "consistently working" thresholds start here (App. B: [0.4, 0.7]); lower ones are flagged
PAPER_RANGE_LOW = 0.4


@DEFENSES.register("rp")
@dataclass
class RecoverPruning(UnitSelection, Defense):
    """EBYD-RP: learn BN masks on the exposed model, prune low-mask channels of θ (D_d threshold rule)."""

    uses_exposure = True

    lr: PositiveFloat = 0.2
    momentum: NonNegativeFloat = 0.9
    alpha: PositiveFloat = 0.2  # weight of the D_d cross-entropy in the mask loss
    epochs: Count = 20
    batch_size: Count = 128
    select_holdout: NonNegativeInt = 0  # hold out this many D_d samples from recovery, for the threshold rule
    prune_bias: bool = False  # ablation only (docs/methods.md §7.1-4): also zero β of the pruned channels

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        recover_data, select_data = split_holdout(ctx.data, self.select_holdout)
        start = exposed.model if exposed is not None else model
        masks = self.recover_masks(start, recover_data, ctx)
        select_ctx = copy.copy(ctx)
        select_ctx.data = select_data
        chosen, fields = self.choose(masks, lambda: self.select_threshold(model, masks, select_ctx), "rp",
                                     PAPER_RANGE_LOW)
        return pruning_result(model, masks, chosen, fields, "rp", lambda units: prune(model, units, self.prune_bias))

    def recover_masks(self, exposed: nn.Module, data: DefenseData, ctx: MethodContext) -> list[torch.Tensor]:
        """Step 1: learn the BN-scale masks of the exposed model on D_d; returns one tensor per BN layer."""
        net = self.recover_network(exposed, data, ctx)
        return [p.detach().cpu().clone() for n, p in net.named_parameters() if n.endswith("neuron_mask")]

    def recover_network(self, exposed: nn.Module, data: DefenseData, ctx: MethodContext) -> nn.Module:
        """Step 1 as a network: the masked-BN copy of the exposed model after recovery (m ⊙ θ_b, with
        the BN running statistics recovery left behind); recovery-only (§7.2) evaluates exactly this."""
        net = swap_norm(exposed, ctx, MaskedBatchNorm2d, ["neuron_mask"])
        mask_params = [p for n, p in net.named_parameters() if n.endswith("neuron_mask")]
        opt = torch.optim.SGD(mask_params, lr=self.lr, momentum=self.momentum)
        gen = ctx.generator(salt=2)
        x_all, y_all = to_unit(data.images), torch.as_tensor(data.labels)
        net.train()
        for _ in range(self.epochs):
            for idx in batches(len(y_all), self.batch_size, gen):
                x = normalize(augment(x_all[idx], gen)).to(ctx.device)
                mask_step(opt, self.alpha * F.cross_entropy(net(x), y_all[idx].to(ctx.device)), mask_params)
        return net.eval()

    def select_threshold(self, model: nn.Module, masks: list[torch.Tensor],
                         ctx: MethodContext) -> tuple[float | None, list[dict]]:
        """Largest t whose pruned θ keeps D_d accuracy ≥ acc₀ − max_acc_drop (None if none does)."""
        return select_by_dd_rule(model, masks, ctx, self.thresholds, self.max_acc_drop, self.prune_bias)


def select_by_dd_rule(model: nn.Module, masks: list[torch.Tensor], ctx: MethodContext, thresholds: tuple[float, ...],
                      max_acc_drop: float, prune_bias: bool = False) -> tuple[float | None, list[dict]]:
    """:func:`dd_rule` with un-augmented D_d accuracy and BN-γ pruning (RP and ANP)."""
    return dd_rule(ctx.clean_accuracy, lambda units: prune(model, units, prune_bias), masks, thresholds,
                   max_acc_drop, model)


def prune(model: nn.Module, units: Selection, prune_bias: bool = False) -> nn.Module:
    """Copy of θ with γ_k := 0 for every selected BN channel; β is kept, so the channel outputs the
    constant β_k before the ReLU (as RNP), unless ``prune_bias`` (an ablation, docs/methods.md §7.1-4)."""
    pruned = copy.deepcopy(model)
    layers = batchnorms(pruned)
    if len(layers) != len(units):
        raise ValueError(f"{len(units)} masks for {len(layers)} BatchNorm layers")
    with torch.no_grad():
        for (_, bn), chosen in zip(layers, units):
            chosen = chosen.to(bn.weight.device)
            bn.weight[chosen] = 0.0
            if prune_bias:
                bn.bias[chosen] = 0.0
    return pruned
