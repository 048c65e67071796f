"""Fine-tuning baseline on text victims — ``ft_text`` (paper App. B; docs/methods.md §7.4-1).

Fine-tune all weights of the backdoored model for 10 epochs on the 500 clean defense samples:
AdamW lr 2e-5 (weight decay 0), batch 32, linear schedule with 3 warm-up epochs, last epoch kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, NonNegativeInt, PositiveFloat
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.benchmark.text.common import text_ctx_data
from ebyd_bench.benchmark.text.training import fine_tune


@DEFENSES.register("ft_text")
@dataclass
class TextFineTune(Defense):
    """FT for text: 10 epochs of AdamW 2e-5 on D_d, 3 warm-up epochs, last epoch kept."""

    domain = "text"

    epochs: Count = 10
    warmup_epochs: NonNegativeInt = 3
    lr: PositiveFloat = 2e-5
    batch_size: Count = 32
    weight_decay: NonNegativeFloat = 0.0
    group_by_length: bool = False  # see benchmark.text.batching

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        data = text_ctx_data(ctx)
        tuned = fine_tune(copy.deepcopy(model), data.texts, data.labels, epochs=self.epochs, lr=self.lr,
                          batch_size=self.batch_size, seed=ctx.seed, device=ctx.device,
                          warmup_fraction=min(self.warmup_epochs / self.epochs, 0.99),
                          weight_decay=self.weight_decay, group_by_length=self.group_by_length)
        return DefenseResult(tuned)
