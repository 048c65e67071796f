"""EBYD-RP on text victims — ``rp_text`` (paper App. B; reference §7.1 "Text RP", §7.4).

1. Recovery on the exposed model θ_b (CUL by default): masks on the LayerNorm γ units, see
   :mod:`benchmark.text.layernorm_masks`.
2. Pruning on the ORIGINAL model θ: γ_k := 0 wherever m_k ≤ t (β kept).
Threshold (``selection``): ``dd_rule`` — the image RP rule, "following the same approach as in
image defense": the largest t in {0.05, …, 0.70} whose pruned θ keeps ``D_d`` accuracy ≥
acc₀ − ``max_acc_drop``; none qualifies → θ unpruned, ``rp_infeasible``. ``threshold``: fixed t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from benchmark.defenses.masked_bn import DD_RULE_THRESHOLDS, dd_rule, pruning_result, split_holdout
from benchmark.methods import DefenseResult, ExposureResult, MethodContext
from benchmark.registries import DEFENSES
from benchmark.text.common import TextDefenseData, dd_stats, text_ctx_data
from benchmark.text.layernorm_masks import LayerNormRecovery, apply_masks


@DEFENSES.register("rp_text")
@dataclass
class TextRecoverPruning(LayerNormRecovery):
    """EBYD-RP for text: LayerNorm-γ masks recovered on θ_b (AdamW 0.1), pruned on θ by the D_d rule."""

    selection: Literal["dd_rule", "threshold"] = "dd_rule"
    threshold: float = 0.2
    max_acc_drop: float = 0.05
    thresholds: tuple[float, ...] = DD_RULE_THRESHOLDS
    select_holdout: int = 0  # hold out this many D_d samples from recovery, for the threshold rule

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        data = text_ctx_data(ctx)
        recover_data, select_data = split_holdout(data, self.select_holdout)
        masks = self.recover(exposed.model if exposed is not None else model, recover_data, ctx)
        t, sweep = ((self.threshold, []) if self.selection == "threshold"
                    else self.select_threshold(model, masks, select_data, ctx.device))
        fields = {"rp_threshold": t, "rp_sweep": sweep}
        if t is not None:
            fields["rp_threshold_below_paper_range"] = t < 0.4
        return pruning_result(model, masks, t, fields, "rp", lambda th: apply_masks(model, masks, threshold=th))

    def select_threshold(self, model: nn.Module, masks: list[torch.Tensor], data: TextDefenseData,
                         device: str) -> tuple[float | None, list[dict]]:
        return dd_rule(lambda m: dd_stats(m, data, device)[0], lambda t: apply_masks(model, masks, threshold=t),
                       masks, self.thresholds, self.max_acc_drop, model)
