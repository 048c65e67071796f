"""The undefended model: the baseline every defense is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.registries import DEFENSES


@DEFENSES.register("none")
@dataclass
class NoDefense(Defense):
    """The undefended model (the baseline of every deviation)."""

    category = "none"
    #: the exposure does not change the model, but its read-off label, BEM and trace are recorded
    #: on the no-defense cell, so exposure-only grids (defenses: [none]) still report them
    uses_exposure = True

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        return DefenseResult(model)
