"""FT — plain fine-tuning of all weights on augmented ``D_d`` (docs/methods.md §7.3-1).

Not an image baseline of the paper; the project's [D]: SGD lr 0.01 (constant), momentum 0.9,
wd 5e-4, batch 128, 20 epochs, keep the last epoch. It is also the ``recovery=finetune`` option of
``recover`` and the optional fine-tuning of ``fp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ebyd_bench.benchmark.defenses.common import finetune
from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat
from ebyd_bench.benchmark.registries import DEFENSES


@DEFENSES.register("ft")
@dataclass
class FineTuning(Defense):
    """Fine-tune θ on augmented D_d (SGD 0.01, momentum 0.9, wd 5e-4, batch 128, 20 epochs)."""

    lr: PositiveFloat = 0.01
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    batch_size: Count = 128
    epochs: Count = 20

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        return DefenseResult(self.tune(model, ctx), {"ft_epochs": self.epochs})

    def tune(self, model: nn.Module, ctx: MethodContext, epochs: int | None = None,
             after_step: Callable[[nn.Module], None] | None = None) -> nn.Module:
        """A fine-tuned copy of ``model`` with these settings (``epochs`` overrides the count)."""
        return finetune(model, ctx, epochs=self.epochs if epochs is None else epochs, lr=self.lr,
                        momentum=self.momentum, weight_decay=self.weight_decay, batch_size=self.batch_size,
                        salt=12, after_step=after_step)
