"""EBYD-RP on text victims — ``rp_text`` (paper App. B; docs/methods.md §7.1.1, §7.4-3).

1. Recovery on the exposed model θ_b (CUL by default): masks on the LayerNorm γ units, see
   :mod:`ebyd_bench.benchmark.text.layernorm_masks`.
2. Pruning on the ORIGINAL model θ: γ_k := 0 wherever m_k ≤ t (β kept).
Threshold (``selection``): ``dd_rule`` — the image RP rule, "following the same approach as in
image defense": the largest t in {0.05, …, 0.70} whose pruned θ keeps ``D_d`` accuracy ≥
acc₀ − ``max_acc_drop``; none qualifies → θ unpruned, ``rp_infeasible``. ``threshold``: fixed t.
``fraction``: the ⌊``fraction`` · N⌋ units with the lowest masks (ties by layer order).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ebyd_bench.benchmark.defenses.masked_bn import Selection, UnitSelection, dd_rule, pruning_result, split_holdout
from ebyd_bench.benchmark.defenses.rp import PAPER_RANGE_LOW
from ebyd_bench.benchmark.methods import DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import NonNegativeInt
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.benchmark.text.common import TextDefenseData, dd_stats, text_ctx_data
from ebyd_bench.benchmark.text.layernorm_masks import LayerNormRecovery, apply_masks


@DEFENSES.register("rp_text")
@dataclass
class TextRecoverPruning(UnitSelection, LayerNormRecovery):
    """EBYD-RP for text: LayerNorm-γ masks recovered on θ_b (AdamW 0.1), pruned on θ by the D_d rule."""

    select_holdout: NonNegativeInt = 0  # hold out this many D_d samples from recovery, for the threshold rule
    prune_bias: bool = False  # ablation only (docs/methods.md §7.1-4): also zero β of the pruned units

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        data = text_ctx_data(ctx)
        recover_data, select_data = split_holdout(data, self.select_holdout)
        masks = self.recover(exposed.model if exposed is not None else model, recover_data, ctx)
        chosen, fields = self.choose(masks, lambda: self.select_threshold(model, masks, select_data, ctx.device),
                                     "rp", PAPER_RANGE_LOW)
        return pruning_result(model, masks, chosen, fields, "rp", self.pruner(model, masks))

    def select_threshold(self, model: nn.Module, masks: list[torch.Tensor], data: TextDefenseData,
                         device: str) -> tuple[float | None, list[dict]]:
        return dd_rule(lambda m: dd_stats(m, data, device)[0], self.pruner(model, masks),
                       masks, self.thresholds, self.max_acc_drop, model)

    def pruner(self, model: nn.Module, masks: list[torch.Tensor]) -> Callable[[Selection], nn.Module]:
        """Selected units → the pruned copy of θ (γ := 0, and β := 0 with ``prune_bias``)."""
        return functools.partial(apply_masks, model, masks, prune_bias=self.prune_bias)
