"""Pruning — activation-based model sparsification (paper §IV-B2, Eq. 5; docs/methods.md §5.3).

Score every penultimate feature (the model's ``features()`` output: 512 post-ReLU layer4 channels
for ResNet-18, 8·width for the narrow variants) by its mean activation over un-augmented ``D_d``
in eval mode, then zero the most active first — the clean features the paper means to remove —
at rates 0.1, …, 0.9 (cumulative). A feature is zeroed through its column of the final linear
layer, so the exposed model keeps the victim's architecture. The rate kept is the smallest whose
``D_d`` accuracy is ≤ 0.30 (the paper's "almost 30%" target; ASR is not visible), otherwise 0.9.

Choices made (docs/methods.md §9 row 7): the official ``act_prune.py`` prunes the 10 **logits** in
ascending order, which at rate 0.9 leaves one logit whatever the backdoor, and ascending order is
the fine-pruning (removal) direction; ``layer="linear", order="ascending"`` reproduces it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ebyd_bench.benchmark.exposures.common import defense_tensors, sweep
from ebyd_bench.benchmark.methods import Exposure, ExposureResult, MethodContext
from ebyd_bench.benchmark.registries import EXPOSURES
from ebyd_bench.benchmark.tensors import normalize
from ebyd_bench.benchmark.params import OpenFractions, Probability

RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def final_linear(model: nn.Module) -> nn.Linear:
    """The classifier head the pruning acts on (``model.linear``)."""
    head = getattr(model, "linear", None)
    if not isinstance(head, nn.Linear) or not callable(getattr(model, "features", None)):
        raise TypeError("pruning exposure needs a model with features(x) and a final nn.Linear named 'linear'")
    return head


@torch.no_grad()
def mean_activation(model: nn.Module, x_all: torch.Tensor, layer: str, device: str) -> torch.Tensor:
    """Mean over ``D_d`` (eval mode) of each penultimate feature, or of each logit for ``layer="linear"``."""
    model.eval()
    total = None
    for i in range(0, len(x_all), 512):
        x = normalize(x_all[i:i + 512]).to(device)
        out = (model(x) if layer == "linear" else model.features(x)).float().sum(0).cpu()
        total = out if total is None else total + out
    return total / len(x_all)


def prune_units(model: nn.Module, units: torch.Tensor, layer: str) -> nn.Module:
    """A copy with ``units`` zeroed: feature columns of the head, or whole logits (rows and biases)."""
    net = copy.deepcopy(model)
    head = final_linear(net)
    with torch.no_grad():
        if layer == "linear":
            head.weight[units] = 0
            if head.bias is not None:
                head.bias[units] = 0
        else:
            head.weight[:, units] = 0
    return net.eval()


@EXPOSURES.register("pruning")
@dataclass
class ActivationPruning(Exposure):
    """Zero the most active penultimate features (rates 0.1–0.9) until D_d accuracy ≤ 0.30."""

    rates: OpenFractions = RATES
    target_acc: Probability = 0.30
    layer: Literal["features", "linear"] = "features"
    order: Literal["descending", "ascending"] = "descending"

    def expose(self, model: nn.Module, ctx: MethodContext) -> ExposureResult:
        base = copy.deepcopy(model).to(ctx.device).eval()
        final_linear(base)
        x_all, _ = defense_tensors(ctx)
        scores = mean_activation(base, x_all, self.layer, ctx.device)
        ranking = torch.argsort(scores, descending=self.order == "descending", stable=True)

        def build(rate: float) -> nn.Module:
            return prune_units(base, ranking[:int(round(rate * len(ranking)))], self.layer)

        return sweep(self.rates, build, ctx, self.target_acc, "rate")
