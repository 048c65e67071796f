"""Grid-level statistics computed from the records of a run (not per cell)."""

from __future__ import annotations

from typing import Any

import pandas as pd


def exposure_detection_auroc(records: pd.DataFrame) -> dict[str, float | None]:
    """Per exposure: AUROC of the read-off label share separating backdoored from clean models.

    Positives are models with an attack, negatives the ``attack: none`` controls trained the same
    way (reference §6.3, model-level DR). One score per (attack, seed) model; None when a grid has
    no clean control or no backdoored model for that exposure.
    """
    from sklearn.metrics import roc_auc_score

    if records.empty or "exposed_label_share" not in records:
        return {}
    models = (records.dropna(subset=["exposure", "exposed_label_share"])
              .drop_duplicates(subset=["exposure", "cache_key"]))
    out: dict[str, float | None] = {}
    for exposure, group in models.groupby("exposure"):
        positive = (group["attack"] != "none").astype(int)
        out[str(exposure)] = (float(roc_auc_score(positive, group["exposed_label_share"]))
                              if positive.nunique() == 2 else None)
    return out


def grid_statistics(records: pd.DataFrame) -> dict[str, Any]:
    return {"exposure_detection_auroc": exposure_detection_auroc(records)}
