"""Text metrics (docs/methods.md §1.3), in the image record schema (``ca``, ``ca_nt``, ``asr``).

CACC = accuracy on the full clean test split (or the evaluated subset); ASR = share of triggered
non-target test samples predicted as the target (the target class is excluded whatever the caller
passes); FTR (SOS, LWP; optional) = 1 − accuracy on partial-trigger copies with their true labels.
``ca_prior_matched`` / ``asr_prior_matched`` (analysis only): CACC and ASR once the target logit is
shifted so that the clean test predictions have the clean labels' target share
(:func:`ebyd_bench.benchmark.metrics.prior_matched`) — on a binary task this tells a removed backdoor from a
model that merely leans away from the target class.
Predictions go through any input filter the model carries (ONION), so those are filtered metrics.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn

from ebyd_bench.benchmark.metrics import accuracy, cell_metrics
from ebyd_bench.benchmark.text.common import predict_logits, predict_texts

TextSet = tuple[Sequence[str], np.ndarray]


def text_metrics(model: nn.Module, clean: TextSet, poisoned: TextSet | None, target: int, device: str = "cpu",
                 negatives: TextSet | None = None) -> dict[str, float | None]:
    texts, labels = clean
    triggered = None if poisoned is None else predict_logits(model, poisoned[0], device).numpy()
    out = cell_metrics(predict_logits(model, texts, device).numpy(), np.asarray(labels), triggered,
                       None if poisoned is None else poisoned[1], target)
    if negatives is not None and len(negatives[1]):
        out["ftr"] = 1.0 - accuracy(predict_texts(model, negatives[0], device), negatives[1])
    return out
