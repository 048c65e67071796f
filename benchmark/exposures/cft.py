"""CFT — Confusion Fine-Tuning (paper §IV-B1, Eq. 4; docs/methods.md §5.2).

Fine-tune on ``D_d`` with random labels so the clean mapping is confused while the trigger →
target shortcut, which no random label contradicts, survives. Defaults are the project's [D]:
fresh uniform labels for every batch, independent of x (the EBYD ``sfft.py`` behaviour), Adam 1e-4
with wd 5e-4, batch 128, augmentation, BN in train mode during updates (``sfft.py`` leaves BN in
eval mode by a quirk), at most 20 epochs; after each epoch stop on the CUL ``D_d`` rule
(un-augmented eval accuracy ≤ CA_min = 1/K, or mean CE ≥ γ = 40). ``cft_labels="fixed"`` draws
one random label per sample once (the paper's "mislabeled copy of D_d").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.exposures.common import defense_tensors, finish, record_step
from ebyd_bench.benchmark.methods import Exposure, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat, Probability
from ebyd_bench.benchmark.registries import EXPOSURES
from ebyd_bench.benchmark.tensors import augment, batches, normalize


@EXPOSURES.register("cft")
@dataclass
class ConfusionFineTuning(Exposure):
    """Fine-tune on D_d with uniform random labels (Adam 1e-4) until D_d accuracy ≤ 1/K or 20 epochs."""

    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 5e-4
    epochs: Count = 20
    batch_size: Count = 128
    cft_labels: Literal["batch", "fixed"] = "batch"
    ca_min: Probability | None = None  # None → 1/K
    loss_bound: PositiveFloat = 40.0

    def expose(self, model: nn.Module, ctx: MethodContext) -> ExposureResult:
        net = copy.deepcopy(model).to(ctx.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        k = ctx.data.num_classes
        ca_min = self.ca_min if self.ca_min is not None else 1.0 / k
        gen = ctx.generator(salt=2)
        x_all, y_all = defense_tensors(ctx)
        fixed = torch.randint(0, k, (len(y_all),), generator=gen) if self.cft_labels == "fixed" else None
        trace, stop_reason = [], "max_epochs"
        for epoch in range(1, self.epochs + 1):
            net.train()
            for idx in batches(len(y_all), self.batch_size, gen):
                x = normalize(augment(x_all[idx], gen)).to(ctx.device)
                y = fixed[idx] if fixed is not None else torch.randint(0, k, (len(idx),), generator=gen)
                loss = F.cross_entropy(net(x), y.to(ctx.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            dd_acc, dd_loss = record_step(trace, epoch, net, x_all, y_all, ctx)
            if dd_acc <= ca_min or dd_loss >= self.loss_bound:
                stop_reason = "ca_min" if dd_acc <= ca_min else "loss_bound"
                break
        return finish(net, ctx, trace, stop_reason)
