"""Supervised training and batched prediction on uint8 image arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from ebyd_bench.benchmark.progress import progress

from ebyd_bench.benchmark.errors import BenchmarkError
from ebyd_bench.benchmark.params import Count, Counts, NonNegativeFloat, PositiveFloat, PositiveFraction, check_ranges
from ebyd_bench.benchmark.tensors import DeviceImages, normalize, to_unit


class DivergedError(BenchmarkError):
    """Training produced a non-finite loss (NaN or ±inf): the model diverged, so the stage fails with
    one line instead of caching a broken model and recording its chance-level numbers."""


def check_finite_loss(value: float, desc: str, epoch: int, step: int | None = None) -> None:
    """Raise :class:`DivergedError` when ``value`` (a loss already read with ``.item()``) is not finite."""
    if not math.isfinite(value):
        when = f"in epoch {epoch}, step {step}" if step is not None else f"by the end of epoch {epoch}"
        raise DivergedError(f"{desc}: the loss became {value} {when}: the model diverged (lower the "
                            f"learning rate, e.g. --set recipe.lr=...); nothing recorded")


@dataclass(frozen=True)
class TrainRecipe:
    """How a victim model is trained. ``paper`` (docs/methods.md §2.3) is the default."""

    name: str = "paper"
    epochs: Count = 200
    lr: PositiveFloat = 0.1
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    batch_size: Count = 128
    schedule: Literal["multistep", "onecycle", "cosine"] = "multistep"
    milestones: Counts = (60, 120)
    gamma: PositiveFraction = 0.1
    #: "crop_flip" (the paper's), "flip" (keeps corner triggers fully visible) or "none"
    augmentation: Literal["crop_flip", "flip", "none"] = "crop_flip"
    #: "bf16" trains under bfloat16 autocast (weights stay float32): 2-3x faster on CPUs with
    #: AMX/AVX512-BF16 and on GPUs; "fp32" is the paper's precision; "auto" becomes bf16 where the
    #: hardware has native bf16 and fp32 elsewhere (resolved before any cache key is computed)
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    #: "off" trains the model as it is; the others wrap it in ``torch.compile`` with that mode for the
    #: training steps ("reduce-overhead" adds CUDA graphs on a GPU). Off by default: whether it pays at
    #: batch 128 is for ``ebyd-bench bench --compile MODE`` to show on each device; compiled kernels
    #: round differently, so the mode is part of the model's cache key
    compile: Literal["off", "default", "reduce-overhead"] = "off"

    def __post_init__(self) -> None:
        check_ranges(self)


def native_bf16(device: str, cpuinfo: str | None = None) -> bool:
    """Whether ``device`` computes in bfloat16 natively rather than emulating it.

    On an AVX2-only CPU oneDNN emulates bf16 and a training step of the narrow ResNet-18 took 9x
    longer than fp32 (measured), so only CPUs flagging AVX512-BF16 or AMX-BF16 count.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    if cpuinfo is None:
        from ebyd_bench.benchmark.provenance import cpuinfo as read_cpuinfo

        cpuinfo = read_cpuinfo()
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(recipe: Any, device: str) -> Any:
    """``recipe`` with ``precision: auto`` replaced by what ``device`` runs fastest (bf16 or fp32)."""
    if getattr(recipe, "precision", None) != "auto":
        return recipe
    return replace(recipe, precision="bf16" if native_bf16(device) else "fp32")


def _scheduler(opt: torch.optim.Optimizer, recipe: TrainRecipe, steps_per_epoch: int):
    if recipe.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(
            opt, [m * steps_per_epoch for m in recipe.milestones], gamma=recipe.gamma)
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total, pct_start=0.25)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)


#: the training loop reads its loss back (for the progress bar and the divergence check) every this
#: many steps and at the end of every epoch, not after every step: each read waits for the device
SYNC_EVERY = 50


def train_classifier(model: nn.Module, images: np.ndarray, labels: np.ndarray, recipe: TrainRecipe,
                     seed: int, device: str = "cpu", desc: str = "training") -> nn.Module:
    """Train ``model`` on uint8 NHWC ``images`` with per-step LR scheduling; deterministic on CPU.

    The images are uploaded to ``device`` once and augmented there (:class:`DeviceImages`); the host
    waits for the device only to read the loss every :data:`SYNC_EVERY` steps and at epoch ends."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = DeviceImages(images, labels, device)
    # weights in the inputs' channels-last layout: oneDNN's fastest, and mixing layouts is slower
    model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    steps = (len(data) + recipe.batch_size - 1) // recipe.batch_size
    sched = _scheduler(opt, recipe, steps)
    forward = model if recipe.compile == "off" else torch.compile(model, mode=recipe.compile)
    with progress(total=recipe.epochs * steps, desc=desc, unit="step", leave=False) as bar:
        for epoch in range(recipe.epochs):
            running, since = torch.zeros((), device=device), 0
            for step, (x, y) in enumerate(data.batches(recipe.batch_size, gen, recipe.augmentation), 1):
                with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=recipe.precision == "bf16"):
                    loss = F.cross_entropy(forward(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.detach().float()
                since += 1
                if since == SYNC_EVERY or step == steps:
                    value = running.item() / since  # the mean loss since the last read
                    bar.update(since)
                    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                    check_finite_loss(value, desc, epoch + 1, step)
                    running.zero_()
                    since = 0
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, device: str = "cpu", batch_size: int = 512) -> np.ndarray:
    """Eval-mode top-1 predictions for uint8 NHWC images."""
    return predict_logits(model, images, device, batch_size).argmax(1).numpy()


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, device: str = "cpu", batch_size: int = 512) -> torch.Tensor:
    model.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(to_unit(images[start:start + batch_size])).to(device)
        out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
