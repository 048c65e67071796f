"""Helpers shared by the exposures (docs/methods.md §5): ``D_d`` statistics, trace rows and level sweeps.

Every exposure records, per step, the eval-mode accuracy, mean CE and prediction histogram on the
un-augmented ``D_d`` (the only numbers a method may read), and calls ``ctx.monitor`` once per step
so that the harness can record test CA/ASR for BEM without the method seeing them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.methods import ExposureResult, MethodContext, read_off_label
from ebyd_bench.benchmark.metrics import prediction_shares
from ebyd_bench.benchmark.tensors import normalize, to_unit


def defense_tensors(ctx: MethodContext) -> tuple[torch.Tensor, torch.Tensor]:
    """``D_d`` as a [0, 1] NCHW float batch and int64 labels (both on the CPU)."""
    return to_unit(ctx.data.images), torch.as_tensor(ctx.data.labels, dtype=torch.long)


@torch.no_grad()
def clean_stats(net: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor,
                device: str) -> tuple[float, float, list[float]]:
    """Eval-mode accuracy, mean CE and prediction histogram on un-augmented D_d."""
    net.eval()
    logits = torch.cat([net(normalize(x_all[i:i + 512]).to(device)).cpu()
                        for i in range(0, len(y_all), 512)])
    shares = prediction_shares(logits.argmax(1).numpy(), logits.shape[1])
    return (float((logits.argmax(1) == y_all).float().mean()), float(F.cross_entropy(logits, y_all)),
            [round(float(v), 4) for v in shares])


def record_step(trace: list[dict[str, Any]], step: int, net: nn.Module, x_all: torch.Tensor,
                y_all: torch.Tensor, ctx: MethodContext, **extra: Any) -> tuple[float, float]:
    """Append the step's ``D_d`` row to ``trace``, call the harness monitor; return (accuracy, loss)."""
    dd_acc, dd_loss, shares = clean_stats(net, x_all, y_all, ctx.device)
    trace.append({"step": step, "dd_acc": dd_acc, "dd_loss": dd_loss, "shares": shares, **extra})
    ctx.monitor(step, net)
    return dd_acc, dd_loss


def finish(net: nn.Module, ctx: MethodContext, trace: list[dict[str, Any]], stop_reason: str) -> ExposureResult:
    """Eval mode, backdoor-label read-off on ``D_d``, and the result record."""
    net.eval()
    label, share, shares = read_off_label(net, ctx)
    return ExposureResult(net, label, share, shares, trace, stop_reason)


def sweep(levels: Sequence[float], build: Callable[[float], nn.Module], ctx: MethodContext, target_acc: float,
          level_name: str) -> ExposureResult:
    """Line search: build the exposed model at each level in turn; keep the first whose ``D_d``
    accuracy is ≤ ``target_acc`` (stop reason ``dd_acc_target``), otherwise the last (``max_level``)."""
    if not levels:
        raise ValueError(f"the {level_name} sweep needs at least one level")
    x_all, y_all = defense_tensors(ctx)
    trace: list[dict[str, Any]] = []
    net = None
    for step, level in enumerate(levels, start=1):
        net = build(level)
        dd_acc, _ = record_step(trace, step, net, x_all, y_all, ctx, **{level_name: level})
        if dd_acc <= target_acc:
            return finish(net, ctx, trace, "dd_acc_target")
    return finish(net, ctx, trace, "max_level")
