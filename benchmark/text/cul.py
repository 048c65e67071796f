"""CUL on text victims — ``cul_text`` (paper §IV-A, App. B; docs/methods.md §5.1.1).

Gradient ascent on the CE of ``D_d`` with AdamW lr 2e-6 (weight decay 0), batch 32, dropout active
(train mode); after each epoch stop when eval-mode ``D_d`` accuracy ≤ CA_min (default 1/K) or mean
``D_d`` CE ≥ γ = 40; at most 20 epochs. The backdoor label is read off the exposed model's
predictions on ``D_d``. ``lr`` and ``epochs`` are parameters: at 2e-6 a few epochs may not move a
small victim (see the quick-text preset notes).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.methods import Exposure, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat, Probability
from ebyd_bench.benchmark.registries import EXPOSURES
from ebyd_bench.benchmark.text.batching import sentence_batches
from ebyd_bench.benchmark.text.common import read_off_label, text_ctx_data, trace_row
from ebyd_bench.benchmark.text.training import adamw


@EXPOSURES.register("cul_text")
@dataclass
class TextCleanUnlearning(Exposure):
    """CUL for text victims: AdamW gradient ascent on D_d (lr 2e-6), stop at 1/K or CE 40."""

    domain = "text"

    lr: PositiveFloat = 2e-6
    weight_decay: NonNegativeFloat = 0.0
    epochs: Count = 20
    batch_size: Count = 32
    ca_min: Probability | None = None  # None → 1/K (0.5 binary, 0.25 AG's News)
    loss_bound: PositiveFloat = 40.0
    group_by_length: bool = False  # see benchmark.text.batching

    def expose(self, model: nn.Module, ctx: MethodContext) -> ExposureResult:
        data = text_ctx_data(ctx)
        net = copy.deepcopy(model).to(ctx.device)
        opt = adamw(net.parameters(), self.lr, self.weight_decay)
        ca_min = self.ca_min if self.ca_min is not None else 1.0 / data.num_classes
        torch.manual_seed(ctx.seed)  # dropout masks
        gen = ctx.generator(salt=1)
        y_all = torch.as_tensor(data.labels, dtype=torch.long)
        trace, stop_reason = [], "max_epochs"
        for epoch in range(self.epochs):
            net.train()
            for idx in sentence_batches(data.texts, self.batch_size, gen, self.group_by_length):
                enc = net.encode([data.texts[i] for i in idx.tolist()], ctx.device)
                loss = -F.cross_entropy(net(**enc), y_all[idx].to(ctx.device))  # ascent
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            row = trace_row(epoch + 1, net, data, ctx.device)
            trace.append(row)
            ctx.monitor(epoch + 1, net)
            if row["dd_acc"] <= ca_min or row["dd_loss"] >= self.loss_bound:
                stop_reason = "ca_min" if row["dd_acc"] <= ca_min else "loss_bound"
                break
        net.eval()
        label, share, shares = read_off_label(net, data, ctx.device)
        return ExposureResult(net, label, share, shares, trace, stop_reason)
