"""What text methods share: the defense data, the method context, and eval-mode prediction.

The defender's ``D_d`` is 500 clean training sentences (docs/methods.md §1.1, §1.10), never used to train the
victim. Every statistic a text method may read comes from :func:`dd_stats` (eval mode, so dropout
off). :class:`FilteredClassifier` is how an input-filtering defense (ONION) hands back a model: the
harness predicts through it, so CACC and ASR are measured on the processed inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.methods import MethodContext
from ebyd_bench.benchmark.metrics import prediction_shares


@dataclass
class TextDefenseData:
    """The defender's clean sentences with their labels."""

    texts: list[str]
    labels: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int]) -> "TextDefenseData":
        return TextDefenseData([self.texts[i] for i in idx], self.labels[np.asarray(idx, dtype=np.int64)],
                               self.num_classes)


@dataclass
class TextMethodContext(MethodContext):
    """:class:`MethodContext` plus two harness services that carry no test-side data:

    * ``offline_lm()`` — the offline stand-in for GPT-2 (ONION ``lm: ngram``), built and cached by the
      harness, so a defense never opens the data root or the artifact cache;
    * ``memo`` — an in-process dict for results a method can recompute from its own inputs, keyed by
      their digests (``rp_text`` and ``recover_text`` share the LayerNorm masks of one exposure).
    """

    offline_lm: Callable[[], Any] | None = None
    memo: dict[str, Any] | None = None


class FilteredClassifier(nn.Module):
    """``inner`` applied to ``input_filter(texts)``: an input-processing defense as a deployable model."""

    def __init__(self, inner: nn.Module, input_filter: Callable[[list[str]], list[str]]) -> None:
        super().__init__()
        self.inner = inner
        self.input_filter = input_filter

    def forward(self, **enc: torch.Tensor) -> torch.Tensor:
        return self.inner(**enc)


def split_filter(model: nn.Module, texts: Sequence[str]) -> tuple[nn.Module, list[str]]:
    """Unwrap filters, applying each to the texts (outermost first)."""
    texts = list(texts)
    while isinstance(model, FilteredClassifier):
        texts = model.input_filter(texts)
        model = model.inner
    return model, texts


@torch.no_grad()
def predict_logits(model: nn.Module, texts: Sequence[str], device: str = "cpu", batch_size: int = 128) -> torch.Tensor:
    """Eval-mode logits in input order; batches are length-sorted so padding stays short."""
    model, texts = split_filter(model, texts)
    model.eval().to(device)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = torch.empty(0)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        logits = model(**model.encode([texts[i] for i in idx], device)).float().cpu()
        if not out.numel():
            out = torch.empty(len(texts), logits.shape[1])
        out[torch.as_tensor(idx)] = logits
    return out


def predict_texts(model: nn.Module, texts: Sequence[str], device: str = "cpu", batch_size: int = 128) -> np.ndarray:
    return predict_logits(model, texts, device, batch_size).argmax(1).numpy()


def dd_stats(model: nn.Module, data: TextDefenseData, device: str) -> tuple[float, float, list[float]]:
    """Eval-mode accuracy, mean CE and prediction histogram on ``D_d``."""
    logits = predict_logits(model, data.texts, device)
    y = torch.as_tensor(data.labels, dtype=torch.long)
    shares = prediction_shares(logits.argmax(1).numpy(), data.num_classes)
    return (float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y)),
            [round(float(s), 4) for s in shares])


def read_off_label(model: nn.Module, data: TextDefenseData, device: str) -> tuple[int, float, list[float]]:
    """Backdoor label = the class most predicted on ``D_d`` (ties → smallest index), docs/methods.md §5."""
    shares = prediction_shares(predict_texts(model, data.texts, device), data.num_classes)
    label = int(np.argmax(shares))
    return label, float(shares[label]), [float(s) for s in shares]


def trace_row(step: int, model: nn.Module, data: TextDefenseData, device: str, **extra: Any) -> dict[str, Any]:
    acc, loss, shares = dd_stats(model, data, device)
    return {"step": step, "dd_acc": acc, "dd_loss": loss, "shares": shares, **extra}


def text_ctx_data(ctx: MethodContext) -> TextDefenseData:
    """``ctx.data`` checked to be text (an image model reaching a text method is a harness bug)."""
    if not isinstance(ctx.data, TextDefenseData):
        raise TypeError(f"text method given {type(ctx.data).__name__}; use the image method on image datasets")
    return ctx.data

