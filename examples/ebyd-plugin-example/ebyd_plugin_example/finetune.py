"""Plain fine-tuning (FT): train every weight of the suspect model on the clean defense data.

The classic removal baseline (ebyd-bench's docs/methods.md §7.3-1): SGD lr 0.01, momentum 0.9, weight decay 5e-4,
batch 128, 20 epochs at a constant learning rate on augmented ``D_d`` (random crop + flip), keep
the last epoch. It ignores the exposed model. Only ``D_d`` is used, as the threat model requires.

Registered by this package's ``pyproject.toml``::

    [project.entry-points."ebyd_bench.defenses"]
    example_ft = "ebyd_plugin_example.finetune:PlainFineTune"
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat
from ebyd_bench.benchmark.tensors import augment, batches, normalize, to_unit


@dataclass
class PlainFineTune(Defense):
    """Plain fine-tuning of all weights on augmented D_d (example plug-in)."""

    registry_name: ClassVar[str] = "example_ft"  # the entry-point name (used in logs and records)
    category: ClassVar[str] = "removal"
    version: ClassVar[str] = "1"  # bump when results change: it enters the cell's cache key

    epochs: Count = 20  # range-checked types: `epochs: 0` in a grid is refused before anything runs
    lr: PositiveFloat = 0.01
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    batch_size: Count = 128

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        net = copy.deepcopy(model).to(ctx.device)  # never modify the suspect model itself
        opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        gen = ctx.generator(salt=101)
        x_all, y_all = to_unit(ctx.data.images), torch.as_tensor(ctx.data.labels, dtype=torch.long)
        acc_before = ctx.clean_accuracy(model)
        losses = []
        for _ in range(self.epochs):
            net.train()
            total, seen = 0.0, 0
            for idx in batches(len(y_all), self.batch_size, gen):
                x = normalize(augment(x_all[idx], gen)).to(ctx.device)
                y = y_all[idx].to(ctx.device)
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + loss.item() * len(idx), seen + len(idx)
            losses.append(round(total / max(seen, 1), 4))
        net.eval()
        fields = {"ft_dd_acc_before": acc_before, "ft_dd_acc": ctx.clean_accuracy(net), "ft_epoch_loss": losses[-10:]}
        return DefenseResult(net, fields)
