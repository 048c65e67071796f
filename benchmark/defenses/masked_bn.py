"""BatchNorm with a learnable per-channel mask on its scale γ (docs/methods.md §7.1-2).

forward = BN with scale γ·m and bias β unmasked; only the masks are trained.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.methods import DefenseResult
from ebyd_bench.benchmark.params import OpenFraction, OpenFractions, Probability

D = TypeVar("D")  # DefenseData or TextDefenseData (anything with len() and subset())
#: which units to prune: one boolean tensor per masked layer, shaped like its mask
Selection = list[torch.Tensor]
#: builds the pruned copy of θ for a selection (γ_k := 0 for the selected units)
PruneUnits = Callable[[Selection], nn.Module]


class MaskedBatchNorm2d(nn.BatchNorm2d):
    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.neuron_mask = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight * self.neuron_mask, self.bias,
                            use_batch_stats, self.momentum if self.momentum is not None else 0.0, self.eps)


#: the pruning thresholds swept by the D_d rule (docs/methods.md §7.1-6): 0.05, 0.10, …, 0.70
DD_RULE_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 15))
#: the fixed-threshold sweep logged with test metrics for diagnostics only (§7.1-6): 0.05, …, 0.90
DIAGNOSTIC_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 19))


def at_most(masks: list[torch.Tensor], threshold: float) -> Selection:
    """Selection by threshold (docs/methods.md §7.1-5): every unit with m_k ≤ ``threshold``."""
    return [m <= threshold for m in masks]


def lowest_fraction(masks: list[torch.Tensor], fraction: float) -> Selection:
    """Selection by fraction (docs/methods.md §7.1-5): the ⌊fraction · N⌋ units with the lowest mask values,
    ties broken by layer order, then channel order (a stable sort over the concatenated masks)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    flat = torch.cat([m.flatten() for m in masks])
    count = math.floor(fraction * flat.numel() + 1e-9)  # the epsilon keeps 0.3 · 100 at 30
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.argsort(flat.cpu(), stable=True)[:count]] = True
    return [part.view_as(m) for part, m in zip(torch.split(chosen, [m.numel() for m in masks]), masks)]


def selected_count(selection: Selection) -> int:
    """How many units a selection prunes."""
    return int(sum(int(s.sum()) for s in selection))


def threshold_alternatives(masks: list[torch.Tensor],
                           prune_units: PruneUnits) -> list[tuple[dict, Callable[[], nn.Module]]]:
    """The pruned model at every diagnostic threshold, built lazily."""
    selections = [(t, at_most(masks, t)) for t in DIAGNOSTIC_THRESHOLDS]
    return [({"t": t, "pruned": selected_count(units)}, lambda units=units: prune_units(units))
            for t, units in selections]


def dd_rule(accuracy: Callable[[nn.Module], float], prune_units: PruneUnits,
            masks: list[torch.Tensor], thresholds: tuple[float, ...],
            max_acc_drop: float, model: nn.Module) -> tuple[float | None, list[dict]]:
    """The D_d-only rule of docs/methods.md §7.1-6: the largest t in ``thresholds`` whose pruned θ keeps
    ``accuracy`` (on defense data only) ≥ acc₀ − ``max_acc_drop``; None if none does. Shared by RP,
    ANP and text RP, which pass their own accuracy and pruning."""
    acc0 = accuracy(model)
    best, sweep = None, []
    for t in thresholds:
        selection = at_most(masks, t)
        acc = accuracy(prune_units(selection))
        sweep.append({"t": t, "dd_acc": round(acc, 4), "pruned": selected_count(selection)})
        if acc >= acc0 - max_acc_drop:
            best = t
    return best, sweep


@dataclass
class UnitSelection:
    """Which units a pruning defense prunes (docs/methods.md §7.1-5/6, §7.1.2); the fields RP, text RP and ANP share.

    ``dd_rule``: the largest t in ``thresholds`` whose pruned θ keeps ``D_d`` accuracy ≥ acc₀ −
    ``max_acc_drop`` (the defender-only dynamic threshold); ``threshold``: m ≤ the fixed ``threshold``;
    ``fraction``: the ⌊``fraction`` · N⌋ units with the lowest masks (ties by layer order), 0 < f < 1.
    """

    selection: Literal["dd_rule", "threshold", "fraction"] = "dd_rule"
    threshold: OpenFraction = 0.2
    fraction: Probability = 0.0
    max_acc_drop: Probability = 0.05
    thresholds: OpenFractions = DD_RULE_THRESHOLDS

    def __post_init__(self) -> None:
        getattr(super(), "__post_init__", lambda: None)()  # the method's own checks (a mixin: may be last)
        if self.selection == "fraction" and not 0.0 < self.fraction < 1.0:
            name = getattr(type(self), "registry_name", type(self).__name__)
            raise ValueError(f"{name}: selection 'fraction' needs 0 < fraction < 1, got fraction={self.fraction}")

    def choose(self, masks: list[torch.Tensor], select_threshold: Callable[[], tuple[float | None, list[dict]]],
               prefix: str, paper_range_low: float | None = None) -> tuple[Selection | None, dict]:
        """The units to prune, and the fields that record the choice; ``select_threshold()`` runs the
        D_d rule (only in ``dd_rule`` mode). With ``paper_range_low`` (RP: 0.4), a threshold below it is
        flagged ``<prefix>_threshold_below_paper_range``."""
        if self.selection == "fraction":
            return lowest_fraction(masks, self.fraction), {f"{prefix}_fraction": self.fraction}
        t, sweep = (self.threshold, []) if self.selection == "threshold" else select_threshold()
        fields: dict = {f"{prefix}_threshold": t, f"{prefix}_sweep": sweep}
        if t is None:
            return None, fields
        if paper_range_low is not None:
            fields[f"{prefix}_threshold_below_paper_range"] = t < paper_range_low
        return at_most(masks, t), fields


def pruning_result(model: nn.Module, masks: list[torch.Tensor], selection: Selection | None, fields: dict,
                   prefix: str, prune_units: PruneUnits) -> DefenseResult:
    """θ pruned at ``selection`` by ``prune_units`` (θ unchanged and ``<prefix>_infeasible`` when it is
    None), with the mask count, the number pruned and, for diagnostics only, the pruned model at
    every fixed threshold. Shared by RP, ANP and text RP."""
    fields = {**fields, f"{prefix}_masks_total": int(sum(m.numel() for m in masks))}
    alternatives = threshold_alternatives(masks, prune_units)
    if selection is None:
        return DefenseResult(copy.deepcopy(model).eval(), {**fields, f"{prefix}_infeasible": True},
                             alternatives=alternatives)
    fields[f"{prefix}_pruned"] = selected_count(selection)
    return DefenseResult(prune_units(selection), fields, alternatives=alternatives)


def split_holdout(data: D, holdout: int) -> tuple[D, D]:
    """(recovery data, threshold-selection data): the last ``holdout`` samples of ``D_d`` held out
    for the D_d rule (docs/methods.md §7.1-6, ``select_holdout``); with 0 both are all of ``D_d``."""
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
