"""Grid-level statistics computed from the records of a run (not per cell).

Pure functions of the records (a DataFrame from :func:`ebyd_bench.results.load_results`); detection
scores are read from the standard ``defense_info`` fields (``model_score``, ``label_scores``) that any
model-inspection defense reports, never from a particular defense's own names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ebyd_bench.results.schema import LABEL_SCORES, MODEL_SCORE
from ebyd_bench.results.store import with_exposure_labels


def exposure_detection_auroc(records: pd.DataFrame) -> dict[str, float | None]:
    """Per exposure: AUROC of the read-off label share separating backdoored from clean models.

    Positives are models with an attack, negatives the ``attack: none`` controls trained the same
    way (docs/methods.md §6.3, model-level DR). One score per (attack, seed) model; None when a grid has
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


def _inspections(records: pd.DataFrame, field: str) -> list[tuple[str, pd.DataFrame]]:
    """(key, rows) per (exposure, defense) whose cells report ``field`` in ``defense_info``, one row per
    model; the key is "<defense>" without an exposure and "<exposure>+<defense>" with one (defenses by
    their shown label, exposures by theirs, so two settings of one method are kept apart)."""
    if records.empty or "defense_info" not in records or "defense" not in records:
        return []
    has_field = records["defense_info"].map(lambda info: isinstance(info, dict) and field in info)
    rows = records[has_field].copy()
    if rows.empty:
        return []
    rows["exposure_name"] = rows["exposure"].fillna("none") if "exposure" in rows else "none"
    labels = rows["defense_label"] if "defense_label" in rows else rows["defense"]
    rows["defense_name"] = labels.where(labels.notna(), rows["defense"])
    out = []
    for (exposure, defense), group in rows.groupby(["exposure_name", "defense_name"], sort=True):
        key = str(defense) if exposure == "none" else f"{exposure}+{defense}"
        out.append((key, group.drop_duplicates(subset="cache_key")))
    return out


def _finite(values: Any) -> np.ndarray:
    """Scores as floats with ±∞ (NC's MAD = 0 case) mapped to the largest finite values (order kept)."""
    arr = np.asarray(values, dtype=float)
    return np.clip(arr, -np.finfo(float).max, np.finfo(float).max)


def _auroc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, _finite(scores))) if len(set(positive.tolist())) == 2 else None


def model_detection_auroc(records: pd.DataFrame) -> dict[str, float | None]:
    """Model-level DR (docs/methods.md §6.3) of every defense that reports a ``model_score`` (higher = more
    likely backdoored): backdoored models (``attack != "none"``) are positives, the ``attack: none``
    controls negatives, one score per model.

    Keys "<defense>" (no exposure) and "<exposure>+<defense>", e.g. NC's "nc" (score: the anomaly
    index) and "cul+nc" (score: −L1 of the exposed label's mask). None when the grid lacks either
    population or a cell lacks its score. (The exposure-label-share score is
    :func:`exposure_detection_auroc`.)
    """
    out: dict[str, float | None] = {}
    for key, group in _inspections(records, MODEL_SCORE):
        scores = [info.get(MODEL_SCORE) for info in group["defense_info"]]
        positive = (group["attack"] != "none").to_numpy(dtype=int)
        out[key] = None if any(s is None for s in scores) else _auroc(positive, np.asarray(scores, float))
    return out


def label_detection_auroc(records: pd.DataFrame) -> dict[str, float | None]:
    """Label-level DR (docs/methods.md §6.3) of every defense that reports ``label_scores`` (one suspicion
    score per label; NC: the signed (med − l_t)/MAD, key "nc"): per backdoored model, the AUROC of the
    scores with the attack's target as the one positive label, averaged over models. Keyed like
    :func:`model_detection_auroc`; None without a backdoored model that has scores."""
    out: dict[str, float | None] = {}
    for key, group in _inspections(records, LABEL_SCORES):
        per_model = []
        for _, row in group[group["attack"] != "none"].iterrows():
            scores = row["defense_info"].get(LABEL_SCORES)
            if scores is None or row.get("target") is None or not 0 <= int(row["target"]) < len(scores):
                continue
            positive = (np.arange(len(scores)) == int(row["target"])).astype(int)
            per_model.append(_auroc(positive, np.asarray(scores, float)))
        out[key] = float(np.mean(per_model)) if per_model else None
    return out


#: docs/methods.md §6.3: model-level detection rates are published from this many clean controls per dataset
MIN_CLEAN_CONTROLS = 3


def model_population(records: pd.DataFrame) -> dict[str, Any]:
    """How many backdoored and clean (``attack: none``) models the model-level AUROCs rest on, with a
    warning when the clean controls are fewer than the minimum of three of docs/methods.md §6.3."""
    if records.empty or "cache_key" not in records:
        return {"backdoored": 0, "clean": 0}
    models = records.drop_duplicates(subset="cache_key")
    clean = int((models["attack"] == "none").sum())
    out: dict[str, Any] = {"backdoored": int(len(models) - clean), "clean": clean}
    if clean < MIN_CLEAN_CONTROLS:
        out["warning"] = (f"model-level AUROCs rest on {clean} clean control(s); docs/methods.md §6.3 publishes them from "
                          f"at least {MIN_CLEAN_CONTROLS} per dataset (add seeds of attack 'none')")
    return out


def grid_statistics(records: pd.DataFrame) -> dict[str, Any]:
    records = with_exposure_labels(records)
    return {"exposure_detection_auroc": exposure_detection_auroc(records),
            "model_detection_auroc": model_detection_auroc(records),
            "model_detection_population": model_population(records),
            "label_detection_auroc": label_detection_auroc(records)}
