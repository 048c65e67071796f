"""Masks on the LayerNorm scales of a text encoder (docs/methods.md §2.2, §7.1.1).

[D] One mask value per unit of γ in every LayerNorm of the encoder: ``embeddings.LayerNorm`` and,
per layer, ``attention.output.LayerNorm`` and ``output.LayerNorm`` — 25 × 768 = 19,200 units for
BERT-base, 13 × 384 = 4,992 for MiniLM-L6. β stays unmasked (the BN convention of image RP).
Recovery trains only the masks (γ·m, weights frozen) on ``D_d`` with AdamW lr 0.1, 10 epochs,
batch 32, clamping them to [0, 1] after every step [P App. B]. [D] Dropout off (``dropout=False``):
image RP's train mode exists for BatchNorm batch statistics, which a transformer does not have, and
dropout noise under Adam's lr 0.1 wrecks the recovery — measured with 5 recovery epochs on the CUL-exposed
quick-text MiniLM BadNet-RW victim: ``D_d`` accuracy of m ⊙ θ_b 0.52 with dropout, 0.83 without (θ: 0.80).
Masks are memoised in-process per (exposed model, ``D_d``, hyper-parameters), so ``rp_text`` and
``recover_text`` learn them once. :class:`LayerNormRecovery` holds those shared hyper-parameters.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ebyd_bench.benchmark.defenses.masked_bn import Selection, mask_step
from ebyd_bench.benchmark.cache import stable_hash
from ebyd_bench.benchmark.methods import Defense, MethodContext
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat
from ebyd_bench.benchmark.text.batching import sentence_batches
from ebyd_bench.benchmark.text.common import TextDefenseData


def encoder_layernorms(model: nn.Module) -> list[tuple[str, nn.LayerNorm]]:
    """Every LayerNorm of the backbone (``hf.base_model``), in module order; the head has none."""
    return [(n, m) for n, m in model.hf.base_model.named_modules() if isinstance(m, nn.LayerNorm)]


class _MaskedScale(nn.Module):
    """Parametrization γ → γ·m with a trainable mask m initialised to 1."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.mask = nn.Parameter(torch.ones(size))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def learn_masks(model: nn.Module, data: TextDefenseData, *, lr: float, epochs: int, batch_size: int,
                weight_decay: float, seed: int, device: str, dropout: bool = False,
                group_by_length: bool = False) -> list[torch.Tensor]:
    """Recovery on a copy of ``model``: minimise CE on ``D_d`` over the masks only; one tensor per LayerNorm."""
    net = copy.deepcopy(model).to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    scales = []
    for _, ln in encoder_layernorms(net):
        scale = _MaskedScale(ln.weight.numel()).to(device)
        parametrize.register_parametrization(ln, "weight", scale)
        scales.append(scale)
    masks = [s.mask for s in scales]
    opt = torch.optim.AdamW(masks, lr=lr, weight_decay=weight_decay)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 2)
    y_all = torch.as_tensor(data.labels, dtype=torch.long)
    net.train(dropout)
    for _ in range(epochs):
        for idx in sentence_batches(data.texts, batch_size, gen, group_by_length):
            enc = net.encode([data.texts[i] for i in idx.tolist()], device)
            mask_step(opt, F.cross_entropy(net(**enc), y_all[idx].to(device)), masks)
    return [m.detach().cpu().clone() for m in masks]


@torch.no_grad()
def apply_masks(model: nn.Module, masks: list[torch.Tensor], units: Selection | None = None,
                prune_bias: bool = False) -> nn.Module:
    """Copy of ``model`` with γ := γ·m (``units`` None: recovery-only) or γ_k := 0 for the selected units
    (pruning; see :func:`ebyd_bench.benchmark.defenses.masked_bn.at_most`), and β_k := 0 too with ``prune_bias``."""
    out = copy.deepcopy(model)
    layers = encoder_layernorms(out)
    if len(layers) != len(masks):
        raise ValueError(f"{len(masks)} masks for {len(layers)} LayerNorm layers")
    for i, ((_, ln), m) in enumerate(zip(layers, masks)):
        if units is None:
            ln.weight.mul_(m.to(ln.weight.device))
        else:
            chosen = units[i].to(ln.weight.device)
            ln.weight[chosen] = 0.0
            if prune_bias:
                ln.bias[chosen] = 0.0
    return out.eval()


@dataclass
class LayerNormRecovery(Defense):
    """Shared recovery hyper-parameters of ``rp_text`` and ``recover_text`` (docs/methods.md §7.1.1)."""

    domain = "text"
    uses_exposure = True

    lr: PositiveFloat = 0.1
    epochs: Count = 10
    batch_size: Count = 32
    weight_decay: NonNegativeFloat = 0.0
    dropout: bool = False  # True: train mode during recovery, as image RP (see the module docstring)
    group_by_length: bool = False  # see benchmark.text.batching

    def recover(self, start: nn.Module, data: TextDefenseData, ctx: MethodContext) -> list[torch.Tensor]:
        """The masks of ``start`` on ``data``; memoised (when the context offers ``memo``) under the digests
        of both and the hyper-parameters, so ``rp_text`` and ``recover_text`` learn them once per exposure."""
        params = {"lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size,
                  "weight_decay": self.weight_decay, "dropout": self.dropout,
                  "group_by_length": self.group_by_length, "seed": ctx.seed,
                  "model": state_digest(start),
                  "data": stable_hash([data.texts, data.labels.tolist()])}

        memo, key = getattr(ctx, "memo", None), "layernorm_masks:" + stable_hash(params)
        if memo is not None and key in memo:
            return [m.clone() for m in memo[key]]
        masks = learn_masks(start, data, lr=self.lr, epochs=self.epochs, batch_size=self.batch_size,
                            weight_decay=self.weight_decay, seed=ctx.seed, device=ctx.device, dropout=self.dropout,
                            group_by_length=self.group_by_length)
        if memo is not None:
            memo[key] = [m.clone() for m in masks]
        return masks


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor of the state dict (names and bytes)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
