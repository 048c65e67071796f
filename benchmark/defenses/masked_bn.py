"""BatchNorm with a learnable per-channel mask on its scale γ (reference §7.1-2).

forward = BN with scale γ·m and bias β unmasked; only the masks are trained.
"""

from __future__ import annotations

import copy
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.methods import DefenseResult

D = TypeVar("D")  # DefenseData or TextDefenseData (anything with len() and subset())


class MaskedBatchNorm2d(nn.BatchNorm2d):
    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.neuron_mask = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight * self.neuron_mask, self.bias,
                            use_batch_stats, self.momentum if self.momentum is not None else 0.0, self.eps)


#: the pruning thresholds swept by the D_d rule (reference §7.1-6): 0.05, 0.10, …, 0.70
DD_RULE_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 15))
#: the fixed-threshold sweep logged with test metrics for diagnostics only (§7.1-6): 0.05, …, 0.90
DIAGNOSTIC_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 19))


def pruned_count(masks: list[torch.Tensor], threshold: float) -> int:
    """How many units a threshold prunes (mask ≤ threshold)."""
    return int(sum(int((m <= threshold).sum()) for m in masks))


def threshold_alternatives(masks: list[torch.Tensor],
                           prune_at: Callable[[float], nn.Module]) -> list[tuple[dict, Callable[[], nn.Module]]]:
    """The pruned model at every diagnostic threshold, built lazily: ``prune_at(t)`` → model."""
    return [({"t": t, "pruned": pruned_count(masks, t)}, lambda t=t: prune_at(t)) for t in DIAGNOSTIC_THRESHOLDS]


def dd_rule(accuracy: Callable[[nn.Module], float], prune_at: Callable[[float], nn.Module],
            masks: list[torch.Tensor], thresholds: tuple[float, ...],
            max_acc_drop: float, model: nn.Module) -> tuple[float | None, list[dict]]:
    """The reference's D_d-only rule (§7.1-6): the largest t in ``thresholds`` whose pruned θ keeps
    ``accuracy`` (on defense data only) ≥ acc₀ − ``max_acc_drop``; None if none does. Shared by RP,
    ANP and text RP, which pass their own accuracy and pruning."""
    acc0 = accuracy(model)
    best, sweep = None, []
    for t in thresholds:
        acc = accuracy(prune_at(t))
        sweep.append({"t": t, "dd_acc": round(acc, 4), "pruned": pruned_count(masks, t)})
        if acc >= acc0 - max_acc_drop:
            best = t
    return best, sweep


def pruning_result(model: nn.Module, masks: list[torch.Tensor], t: float | None, fields: dict, prefix: str,
                   prune_at: Callable[[float], nn.Module]) -> DefenseResult:
    """θ pruned at t by ``prune_at`` (θ unchanged and ``<prefix>_infeasible`` when t is None), with the
    mask count, the number pruned and, for diagnostics only, the pruned model at every fixed threshold.
    Shared by RP, ANP and text RP."""
    fields = {**fields, f"{prefix}_masks_total": int(sum(m.numel() for m in masks))}
    alternatives = threshold_alternatives(masks, prune_at)
    if t is None:
        return DefenseResult(copy.deepcopy(model).eval(), {**fields, f"{prefix}_infeasible": True},
                             alternatives=alternatives)
    fields[f"{prefix}_pruned"] = pruned_count(masks, t)
    return DefenseResult(prune_at(t), fields, alternatives=alternatives)


def split_holdout(data: D, holdout: int) -> tuple[D, D]:
    """(recovery data, threshold-selection data): the last ``holdout`` samples of ``D_d`` held out
    for the D_d rule (reference §7.1-6, ``rp_select_holdout``); with 0 both are all of ``D_d``."""
    if holdout <= 0:
        return data, data
    if holdout >= len(data):
        raise ValueError(f"select_holdout={holdout} leaves no recovery data out of {len(data)}")
    n = len(data) - holdout
    return data.subset(range(n)), data.subset(range(n, len(data)))


def mask_step(opt: torch.optim.Optimizer, loss: torch.Tensor, masks: list[torch.Tensor]) -> None:
    """One optimizer step on the masks, then clamp them to [0, 1] (Alg. 2 line 14)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        for m in masks:
            m.clamp_(0.0, 1.0)


def batchnorms(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """All BatchNorm2d layers in module order (the 20 mask targets of a ResNet-18)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
