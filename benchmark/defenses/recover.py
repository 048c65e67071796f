"""Recovery-only — EBYD-RP without the pruning step (paper §VI-D, Table V; docs/methods.md §7.2).

The [D] reading: θ_b with the continuous masks learned by RP's recovery step applied, m ⊙ θ_b
(γ_k·m_k, β untouched), keeping the BN running statistics that recovery left behind, evaluated in
eval mode. The masks are folded into a plain copy so the result has the victim's architecture.
``recovery="finetune"`` instead fine-tunes all weights of θ_b with the FT settings (§7.3; ``epochs``
is shared, 20 in both); which of
the two the paper measured is *unverified*. Without an exposure it recovers on θ (an ablation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ebyd_bench.benchmark.defenses.ft import FineTuning
from ebyd_bench.benchmark.defenses.masked_bn import batchnorms
from ebyd_bench.benchmark.defenses.rp import RecoverPruning
from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat
from ebyd_bench.benchmark.registries import DEFENSES


@DEFENSES.register("recover")
@dataclass
class RecoveryOnly(Defense):
    """θ_b with RP's recovered BN masks applied (or fine-tuned with ``recovery="finetune"``)."""

    uses_exposure = True

    recovery: Literal["masks", "finetune"] = "masks"
    lr: PositiveFloat = 0.2
    momentum: NonNegativeFloat = 0.9
    alpha: PositiveFloat = 0.2
    epochs: Count = 20
    batch_size: Count = 128

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        start = exposed.model if exposed is not None else model
        fields = {"recover_source": "theta_b" if exposed is not None else "theta", "recovery": self.recovery}
        if self.recovery == "finetune":
            return DefenseResult(FineTuning(epochs=self.epochs).tune(start, ctx), fields)
        rp = RecoverPruning(lr=self.lr, momentum=self.momentum, alpha=self.alpha, epochs=self.epochs,
                            batch_size=self.batch_size)
        masked = rp.recover_network(start, ctx.data, ctx)
        masks = torch.cat([p.detach().flatten() for n, p in masked.named_parameters() if n.endswith("neuron_mask")])
        fields.update(recover_mask_mean=float(masks.mean()), recover_masks_at_most_0_2=int((masks <= 0.2).sum()))
        return DefenseResult(fold_masks(masked, ctx), fields)


def fold_masks(masked: nn.Module, ctx: MethodContext) -> nn.Module:
    """A plain-BN model equal to ``masked`` in eval mode: γ := γ·m, everything else copied."""
    if ctx.model_factory is None:
        raise ValueError("recover needs ctx.model_factory to rebuild a plain model")
    plain = ctx.model_factory().to(ctx.device)
    plain.load_state_dict({k: v for k, v in masked.state_dict().items() if not k.endswith("neuron_mask")})
    with torch.no_grad():
        for (_, bn), (_, mbn) in zip(batchnorms(plain), batchnorms(masked), strict=True):
            bn.weight.mul_(mbn.neuron_mask.to(bn.weight.device))
    return plain.eval()
