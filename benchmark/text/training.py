"""Fine-tuning of text victims (docs/methods.md §2.4) and the loop the text defenses reuse.

[D] AdamW with weight decay 0 (= Adam, as the paper states), lr 2e-5 and batch 32 (OpenBackdoor's
defaults); a linear schedule with warm-up: 13 epochs of which 3 warm up for BadNet-RW/SL,
Syntactic and SOS (``warmup_fraction`` 3/13 keeps that ratio when a CPU preset shortens the run);
gradient-norm clipping at 1.0 as in OpenBackdoor's trainer; the last epoch is kept (no selection
on poisoned dev data, §1.6-4). ``epochs=None`` means each attack's paper epochs (13, RIPPLe 3,
LWP 4). The maximum token length belongs to the victim (model parameter ``max_length``).

:func:`attack_training_attention` is the attention kernel the attacks with their own training
procedure (RIPPLe, LWP, SOS) train under, on every device: see its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat, Probability, check_ranges
from ebyd_bench.benchmark.training import check_finite_loss
from ebyd_bench.benchmark.text.batching import sentence_batches

LossFn = Callable[[nn.Module, dict, torch.Tensor], torch.Tensor]

#: the scaled-dot-product-attention backend of :func:`attack_training_attention`
ATTACK_SDPA_BACKEND = "math"


def attack_training_attention() -> ContextManager[None]:
    """A context in which every ``scaled_dot_product_attention`` call runs the math kernel.

    RIPPLe differentiates its loss twice (the gradient of ⟨∇L_P, ∇L_FT⟩), and only the math kernel
    has a double backward: the fused kernels do not ("derivative for
    aten::_scaled_dot_product_efficient_attention_backward is not implemented" on CUDA;
    ``_scaled_dot_product_flash_attention_for_cpu_backward`` likewise on a CPU in eval mode). Without
    this context the choice is the device's: a CPU in train mode (dropout on) happens to pick math,
    a GPU picks a fused kernel, so CPU tests passed while the GPU run failed. The context never reads
    the device, so RIPPLe, LWP and SOS train under the same kernel everywhere and CPU tests exercise
    the GPU path's choice. It acts on PyTorch's dispatch, not on the ``transformers`` model: models
    built with ``attn_implementation="sdpa"`` (BERT's default from ``transformers`` 4.41 on, 5.x included)
    then compute the math kernel, and ``"eager"`` ones (BERT under 4.40) never call SDPA at all."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return torch.backends.cuda.sdp_kernel(enable_flash=False, enable_math=True, enable_mem_efficient=False)
    return sdpa_kernel([SDPBackend.MATH])


def attention_backends() -> dict[str, bool]:
    """Which scaled-dot-product-attention backends PyTorch may use right now (what a test asserts on)."""
    cuda = torch.backends.cuda
    names = {"math": "math_sdp_enabled", "flash": "flash_sdp_enabled", "efficient": "mem_efficient_sdp_enabled",
             "cudnn": "cudnn_sdp_enabled"}
    return {k: bool(getattr(cuda, fn)()) for k, fn in names.items() if hasattr(cuda, fn)}


@dataclass(frozen=True)
class TextRecipe:
    """How a text victim is fine-tuned; every field enters the poisoned model's cache key."""

    name: str = "paper"
    epochs: Count | None = None  # None: the attack's paper epochs
    lr: PositiveFloat = 2e-5
    batch_size: Count = 32
    weight_decay: NonNegativeFloat = 0.0
    warmup_fraction: Probability = 3 / 13
    max_grad_norm: PositiveFloat | None = 1.0
    group_by_length: bool = False  # see benchmark.text.batching

    def __post_init__(self) -> None:
        check_ranges(self)
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    def epochs_for(self, paper_epochs: int) -> int:
        return self.epochs if self.epochs is not None else paper_epochs


def adamw(params, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW, fused where the build supports it (≈5× faster update of MiniLM's 22.7M weights on a CPU)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def ce_loss(model: nn.Module, enc: dict, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(**enc), labels)


def linear_schedule(opt: torch.optim.Optimizer, total_steps: int,
                    warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base lr, then linear decay to 0 (``get_linear_schedule_with_warmup``)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps  # HF starts at 0; +1 so that the first step is not wasted
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fine_tune(model: nn.Module, texts: Sequence[str], labels: np.ndarray, *, epochs: int, lr: float,
              batch_size: int, seed: int, device: str = "cpu", warmup_fraction: float = 0.0,
              weight_decay: float = 0.0, max_grad_norm: float | None = None, loss_fn: LossFn = ce_loss,
              decay: bool = True, group_by_length: bool = False) -> nn.Module:
    """AdamW over all parameters with a linear schedule (``decay=False``: constant lr); returns ``model``."""
    torch.manual_seed(seed)  # dropout masks
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    model.to(device).train()
    opt = adamw(model.parameters(), lr, weight_decay)
    steps = epochs * -(-len(texts) // batch_size)
    sched = linear_schedule(opt, steps, int(round(warmup_fraction * steps))) if decay else None
    for epoch in range(epochs):
        loss = None
        for idx in sentence_batches(texts, batch_size, gen, group_by_length):
            enc = model.encode([texts[i] for i in idx.tolist()], device)
            loss = loss_fn(model, enc, y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            if sched is not None:
                sched.step()
        if loss is not None:  # once per epoch: a diverged model fails its stage instead of being recorded
            check_finite_loss(loss.item(), "fine-tuning", epoch + 1)
    return model.eval()
