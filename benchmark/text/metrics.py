"""Text metrics (reference §1.3), in the image record schema (``ca``, ``ca_nt``, ``asr``).

CACC = accuracy on the full clean test split (or the evaluated subset); ASR = share of triggered
non-target test samples predicted as the target (the target class is excluded whatever the caller
passes); FTR (SOS, LWP; optional) = 1 − accuracy on partial-trigger copies with their true labels.
Predictions go through any input filter the model carries (ONION), so those are filtered metrics.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn

from benchmark.metrics import accuracy, attack_success_rate
from benchmark.text.common import predict_texts

TextSet = tuple[Sequence[str], np.ndarray]


def text_metrics(model: nn.Module, clean: TextSet, poisoned: TextSet | None, target: int, device: str = "cpu",
                 negatives: TextSet | None = None) -> dict[str, float | None]:
    texts, labels = clean
    pred = predict_texts(model, texts, device)
    nt = np.asarray(labels) != target
    out: dict[str, float | None] = {"ca": accuracy(pred, labels), "ca_nt": accuracy(pred[nt], np.asarray(labels)[nt])}
    out["asr"] = None if poisoned is None else attack_success_rate(
        predict_texts(model, poisoned[0], device), poisoned[1], target)
    if negatives is not None and len(negatives[1]):
        out["ftr"] = 1.0 - accuracy(predict_texts(model, negatives[0], device), negatives[1])
    return out
