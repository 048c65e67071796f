"""Pieces shared by the defenses: the augmented ``D_d`` training loop, activation capture and
norm-layer swaps (docs/methods.md §1.1-3: crop + flip augmentation for every training-like step, inputs
normalised after augmentation). Everything here reads ``ctx.data`` only.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.exposures.common import defense_tensors
from ebyd_bench.benchmark.methods import MethodContext
from ebyd_bench.benchmark.tensors import augment, batches, normalize

#: loss of one augmented, normalised batch: (net, x, y) → scalar
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["LossFn", "defense_tensors", "ce_loss", "train_on_dd", "finetune", "capture", "swap_norm",
           "features_of"]


def ce_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(net(x), y)


def train_on_dd(net: nn.Module, ctx: MethodContext, opt: torch.optim.Optimizer, epochs: int, batch_size: int,
                salt: int, loss_fn: LossFn = ce_loss, after_step: Callable[[], None] | None = None) -> nn.Module:
    """``epochs`` shuffled passes over augmented ``D_d`` in train mode; returns ``net`` in eval mode.

    Batch order and augmentation come from ``ctx.generator(salt)``, so a run is deterministic.
    ``after_step`` runs after every optimiser step (e.g. to clamp masks or keep pruned units at 0).
    """
    gen = ctx.generator(salt)
    x_all, y_all = defense_tensors(ctx)
    net.to(ctx.device)
    for _ in range(epochs):
        net.train()
        for idx in batches(len(y_all), batch_size, gen):
            x = normalize(augment(x_all[idx], gen)).to(ctx.device)
            loss = loss_fn(net, x, y_all[idx].to(ctx.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
    return net.eval()


def finetune(model: nn.Module, ctx: MethodContext, *, epochs: int, lr: float, momentum: float,
             weight_decay: float, batch_size: int, salt: int, nesterov: bool = False,
             after_step: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """A fine-tuned copy of ``model``: SGD with a constant lr on all weights, augmented ``D_d``."""
    net = copy.deepcopy(model).to(ctx.device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                          nesterov=nesterov)
    hook = (lambda: after_step(net)) if after_step is not None else None
    return train_on_dd(net, ctx, opt, epochs, batch_size, salt, after_step=hook)


@contextmanager
def capture(net: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """While active, ``out[name]`` holds the latest output of each named submodule (forward hooks)."""
    modules = dict(net.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"model has no submodule(s) {missing}")
    out: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: out.__setitem__(n, o)) for n in names]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def features_of(model: nn.Module, x_all: torch.Tensor, device: str, batch_size: int = 512) -> torch.Tensor:
    """Eval-mode penultimate features (``model.features``) of un-augmented [0, 1] images."""
    model.eval()
    return torch.cat([model.features(normalize(x_all[i:i + batch_size]).to(device)).float().cpu()
                      for i in range(0, len(x_all), batch_size)])


def swap_norm(model: nn.Module, ctx: MethodContext, norm_layer: type[nn.Module],
              new_params: Sequence[str]) -> nn.Module:
    """A copy of ``model`` built with another norm layer (``ctx.model_factory``), same weights.

    ``new_params`` are the parameter suffixes the new layer adds (e.g. ``neuron_mask``); any
    other mismatch between the two state dicts is an error. Every original weight is frozen.
    """
    if ctx.model_factory is None:
        raise ValueError("this defense needs ctx.model_factory to rebuild the model with another norm layer")
    net = ctx.model_factory(norm_layer=norm_layer).to(ctx.device)
    missing, unexpected = net.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.endswith(tuple(new_params)) for k in missing):
        raise ValueError(f"rebuilt model does not match the input model: {missing} {unexpected}")
    for name, p in net.named_parameters():
        p.requires_grad_(name.endswith(tuple(new_params)))
    return net
