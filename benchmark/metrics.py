"""Metric definitions (reference §1.3, §1.4). All values are fractions in [0, 1]."""

from __future__ import annotations

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """CA: top-1 accuracy over every given (clean) sample."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((predictions == labels).mean())


def attack_success_rate(triggered_predictions: np.ndarray, true_labels: np.ndarray, target: int) -> float:
    """ASR: share of triggered samples whose true label is not ``target`` that are predicted as it.

    Samples of the target class are excluded here, whatever the caller passes.
    """
    preds, labels = np.asarray(triggered_predictions), np.asarray(true_labels)
    keep = labels != target
    if not keep.any():
        raise ValueError("ASR needs at least one sample whose true label differs from the target")
    return float((preds[keep] == target).mean())


def backdoor_exposure_metric(asr: list[float], ca: list[float]) -> float:
    """BEM = mean(ASR_i − CA_i) / mean(ASR_i) over the exposure steps (paper Eq. 7)."""
    if not asr or len(asr) != len(ca):
        raise ValueError("BEM needs equally long, non-empty ASR and CA traces")
    mean_asr = float(np.mean(asr))
    return float(np.mean(np.asarray(asr) - np.asarray(ca)) / mean_asr) if mean_asr > 0 else float("-inf")


def prediction_shares(predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of samples predicted as each class."""
    return np.bincount(np.asarray(predictions), minlength=num_classes)[:num_classes] / max(len(predictions), 1)
