"""Recovery-only on text victims — ``recover_text`` (paper §VI-D, Table V; docs/methods.md §7.2).

[D] θ_b with the learned continuous LayerNorm masks applied (γ := γ·m on the exposed model), the
recovery step of ``rp_text`` alone, evaluated in eval mode. Without an exposure, masks are learned
on θ (ablation).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ebyd_bench.benchmark.methods import DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.benchmark.text.common import text_ctx_data
from ebyd_bench.benchmark.text.layernorm_masks import LayerNormRecovery, apply_masks


@DEFENSES.register("recover_text")
@dataclass
class TextRecovery(LayerNormRecovery):
    """Recovery-only for text: the exposed model with its recovered LayerNorm masks (m ⊙ θ_b)."""

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        start = exposed.model if exposed is not None else model
        masks = self.recover(start, text_ctx_data(ctx), ctx)
        mean = float(sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks))
        return DefenseResult(apply_masks(start, masks), {"recover_mask_mean": round(mean, 4)})
