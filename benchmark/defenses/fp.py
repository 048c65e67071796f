"""FP — Fine-Pruning (Liu et al. 2018; paper App. B; docs/methods.md §7.3-2).

Rank the penultimate features (the layer4 output channels = the linear layer's inputs; 512 for
ResNet-18) by ascending mean activation on un-augmented ``D_d`` (eval mode), mask them one at a time
through the linear layer's input columns, and keep the last model whose ``D_d`` accuracy is still
≥ ``min_dd_acc`` (0.80): the paper's "until CA < 80%", measured on ``D_d`` because test accuracy is
off limits. No fine-tuning by default (as in the VIN-IA code the paper used); ``fp_ft_epochs`` > 0
fine-tunes with the FT settings while the pruned columns stay at zero.

Pruning only changes the head, so the features are computed once and every candidate's ``D_d``
accuracy is evaluated on them (cost: one forward pass over ``D_d``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ebyd_bench.benchmark.defenses.common import defense_tensors, features_of
from ebyd_bench.benchmark.defenses.ft import FineTuning
from ebyd_bench.benchmark.exposures.pruning import final_linear, prune_units
from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import NonNegativeInt, Probability
from ebyd_bench.benchmark.registries import DEFENSES


@DEFENSES.register("fp")
@dataclass
class FinePruning(Defense):
    """Mask the least active penultimate features while D_d accuracy stays ≥ 0.80."""

    min_dd_acc: Probability = 0.80
    fp_ft_epochs: NonNegativeInt = 0

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        net = copy.deepcopy(model).to(ctx.device).eval()
        x_all, y_all = defense_tensors(ctx)
        head = final_linear(net)
        feats = features_of(net, x_all, ctx.device)
        order = torch.argsort(feats.mean(0), stable=True)  # ascending mean activation
        curve = pruning_curve(feats, y_all, head.weight.detach().cpu().float(), _bias(head), order)
        n = last_count_above(curve, self.min_dd_acc)
        units = order[:n]
        pruned = prune_units(net, units, "features")
        if self.fp_ft_epochs > 0:
            pruned = FineTuning().tune(pruned, ctx, self.fp_ft_epochs,
                                       after_step=lambda tuned: _zero_columns(tuned, units))
        fields = {"fp_pruned": int(n), "fp_units": int(len(order)), "fp_dd_acc_before": round(float(curve[0]), 4),
                  "fp_dd_acc": round(ctx.clean_accuracy(pruned), 4), "fp_infeasible": bool(curve[0] < self.min_dd_acc)}
        return DefenseResult(pruned, fields)


def pruning_curve(feats: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                  order: torch.Tensor) -> torch.Tensor:
    """``curve[k]`` = accuracy after masking the first k units of ``order`` (k = 0 … C)."""
    logits = feats.double() @ weight.double().T + bias.double()
    accs = [(logits.argmax(1) == labels).double().mean()]
    for u in order.tolist():
        logits -= feats[:, u:u + 1].double() * weight[:, u].double()
        accs.append((logits.argmax(1) == labels).double().mean())
    return torch.stack(accs)


def last_count_above(curve: torch.Tensor, min_acc: float) -> int:
    """Pruning one unit at a time, the count just before accuracy first drops below ``min_acc``
    (0 when even the unpruned model is below it)."""
    below = (curve < min_acc).nonzero()
    return len(curve) - 1 if len(below) == 0 else max(int(below[0]) - 1, 0)


def _bias(head: nn.Linear) -> torch.Tensor:
    return head.bias.detach().cpu().float() if head.bias is not None else torch.zeros(head.out_features)


def _zero_columns(net: nn.Module, units: torch.Tensor) -> None:
    with torch.no_grad():
        final_linear(net).weight[:, units] = 0
