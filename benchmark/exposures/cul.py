"""CUL — Clean Unlearning (paper §IV-A, docs/methods.md §5.1).

Gradient ascent on the cross-entropy of the defense data until the model's clean behaviour is
gone, which leaves the backdoor dominant. Defaults are the project's [D]: SGD lr 0.01,
momentum 0.9, wd 5e-4, ×0.1 at epoch 10, batch 128, BN in train mode during ascent; after each
epoch stop when un-augmented ``D_d`` accuracy ≤ CA_min (default 1/K) or mean ``D_d`` CE ≥ γ = 40.

Official-code variants (docs/methods.md §5.1), by configuration:
  * ``stop_on="train_accuracy", ca_min=0.2``: RNP's rule, stop when the running accuracy of the
    epoch's augmented, train-mode batches is ≤ 0.20 (it usually fires before the eval-mode one);
  * ``optimizer="adam", lr=1e-5``: the optimizer of EBYD's ``unlearn.py`` (its BN-eval quirk and
    its missing stop rule are not reproduced).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.exposures.common import finish, record_step
from ebyd_bench.benchmark.methods import Exposure, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, NonNegativeInt, PositiveFloat, Probability
from ebyd_bench.benchmark.registries import EXPOSURES
from ebyd_bench.benchmark.tensors import augment, batches, normalize, to_unit


@EXPOSURES.register("cul")
@dataclass
class CleanUnlearning(Exposure):
    """Gradient ascent on D_d (SGD 0.01) until D_d accuracy ≤ 1/K or loss ≥ 40 (≤ 20 epochs)."""

    lr: PositiveFloat = 0.01
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    epochs: Count = 20
    lr_decay_epoch: NonNegativeInt = 10
    batch_size: Count = 128
    ca_min: Probability | None = None  # None → 1/K (0.10 on CIFAR-10, the paper's value)
    loss_bound: PositiveFloat = 40.0
    stop_on: Literal["dd_accuracy", "train_accuracy"] = "dd_accuracy"
    optimizer: Literal["sgd", "adam"] = "sgd"

    def expose(self, model: nn.Module, ctx: MethodContext) -> ExposureResult:
        net = copy.deepcopy(model).to(ctx.device)
        if self.optimizer == "adam":
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=self.momentum,
                                  weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [self.lr_decay_epoch], 0.1)
        ca_min = self.ca_min if self.ca_min is not None else 1.0 / ctx.data.num_classes
        gen = ctx.generator(salt=1)
        x_all, y_all = to_unit(ctx.data.images), torch.as_tensor(ctx.data.labels)
        trace, stop_reason = [], "max_epochs"
        for epoch in range(self.epochs):
            net.train()
            correct = 0
            for idx in batches(len(y_all), self.batch_size, gen):
                x, y = normalize(augment(x_all[idx], gen)).to(ctx.device), y_all[idx].to(ctx.device)
                logits = net(x)
                loss = -F.cross_entropy(logits, y)  # ascent
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                correct += int((logits.argmax(1) == y).sum())
            sched.step()
            train_acc = correct / len(y_all)
            dd_acc, dd_loss = record_step(trace, epoch + 1, net, x_all, y_all, ctx, train_acc=train_acc)
            watched = dd_acc if self.stop_on == "dd_accuracy" else train_acc
            if watched <= ca_min or dd_loss >= self.loss_bound:
                stop_reason = "ca_min" if watched <= ca_min else "loss_bound"
                break
        return finish(net, ctx, trace, stop_reason)
