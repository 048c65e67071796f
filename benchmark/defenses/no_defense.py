"""The undefended model: the baseline every defense is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from benchmark.registries import DEFENSES


@DEFENSES.register("none")
@dataclass
class NoDefense(Defense):
    """The undefended model (the baseline of every deviation)."""

    category = "none"

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        return DefenseResult(model)
