"""Grid-level statistics computed from the records of a run (not per cell)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ebyd_bench.results.store import with_exposure_labels


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


def _nc_models(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (exposure, model) among the ``nc`` cells, with their ``defense_info``."""
    if records.empty or "defense_info" not in records or "defense" not in records:
        return pd.DataFrame(columns=["exposure_name", "cache_key", "attack", "defense_info"])
    rows = records[records["defense"] == "nc"].copy()
    rows["exposure_name"] = rows["exposure"].fillna("none") if "exposure" in rows else "none"
    return rows.drop_duplicates(subset=["exposure_name", "cache_key"])


def _finite(values: Any) -> np.ndarray:
    """Scores as floats with ±∞ (NC's MAD = 0 case) mapped to the largest finite values (order kept)."""
    arr = np.asarray(values, dtype=float)
    return np.clip(arr, -np.finfo(float).max, np.finfo(float).max)


def _auroc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, _finite(scores))) if len(set(positive.tolist())) == 2 else None


def model_detection_auroc(records: pd.DataFrame) -> dict[str, float | None]:
    """Model-level DR of NC (reference §6.3): backdoored models (``attack != "none"``) are positives,
    the ``attack: none`` controls negatives, one score per model.

    ``"nc"``: plain NC cells (no exposure), score = anomaly index. ``"<exposure>+nc"``: X+NC cells,
    score = −L1 of the exposed label's mask (a smaller trigger = more suspicious). None when the grid
    lacks either population or a cell lacks its score; a key only for exposures that have NC cells.
    (The exposure-label-share score is :func:`exposure_detection_auroc`.)
    """
    out: dict[str, float | None] = {}
    for exposure, group in _nc_models(records).groupby("exposure_name"):
        if exposure == "none":
            key, scores = "nc", [info.get("anomaly_index") for info in group["defense_info"]]
        else:
            key = f"{exposure}+nc"
            scores = [None if info.get("nc_label_l1") is None else -info["nc_label_l1"]
                      for info in group["defense_info"]]
        positive = (group["attack"] != "none").to_numpy(dtype=int)
        out[key] = None if any(s is None for s in scores) else _auroc(positive, np.asarray(scores, float))
    return out


def label_detection_auroc(records: pd.DataFrame) -> dict[str, float | None]:
    """Label-level DR of plain NC (reference §6.3): per backdoored model, the AUROC of the signed
    per-label scores (med − l_t)/MAD with the attack's target as the one positive label, averaged over
    models. ``{}`` without plain NC cells; None without a backdoored one."""
    rows = _nc_models(records)
    rows = rows[rows["exposure_name"] == "none"]
    if rows.empty:
        return {}
    per_model = []
    for _, row in rows[rows["attack"] != "none"].iterrows():
        scores = row["defense_info"].get("nc_label_scores")
        if scores is None or row.get("target") is None or not 0 <= int(row["target"]) < len(scores):
            continue
        positive = (np.arange(len(scores)) == int(row["target"])).astype(int)
        per_model.append(_auroc(positive, np.asarray(scores, float)))
    return {"nc": float(np.mean(per_model)) if per_model else None}


#: reference §6.3: model-level detection rates are published from this many clean controls per dataset
MIN_CLEAN_CONTROLS = 3


def model_population(records: pd.DataFrame) -> dict[str, Any]:
    """How many backdoored and clean (``attack: none``) models the model-level AUROCs rest on, with a
    warning when the clean controls are fewer than the reference's minimum of three."""
    if records.empty or "cache_key" not in records:
        return {"backdoored": 0, "clean": 0}
    models = records.drop_duplicates(subset="cache_key")
    clean = int((models["attack"] == "none").sum())
    out: dict[str, Any] = {"backdoored": int(len(models) - clean), "clean": clean}
    if clean < MIN_CLEAN_CONTROLS:
        out["warning"] = (f"model-level AUROCs rest on {clean} clean control(s); the reference publishes them from "
                          f"at least {MIN_CLEAN_CONTROLS} per dataset (add seeds of attack 'none')")
    return out


def grid_statistics(records: pd.DataFrame) -> dict[str, Any]:
    records = with_exposure_labels(records)
    return {"exposure_detection_auroc": exposure_detection_auroc(records),
            "model_detection_auroc": model_detection_auroc(records),
            "model_detection_population": model_population(records),
            "label_detection_auroc": label_detection_auroc(records)}
