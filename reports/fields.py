"""Generic access to a method's own outputs (``defense_info``), whatever fields a defense adds.

Defenses write free-form fields (RP: ``rp_threshold``; detectors: ``strip_auroc``, ``nc_label``,
``nc_flagged``, ``anomaly_index`` …). Reports never hard-code them: scalars are flattened
(nested dicts joined with "."), long lists and lists of records (sweeps) are left out, and a
name's suffix says what a field is (a score, a label guess, a flag).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from .tables import is_flag, is_number

#: final name part of fields compared by `ebyd-bench compare` and shown as detection scores
SCORE_SUFFIX = re.compile(r"(?:^|[_.])(auroc|auc|acc|accuracy|asr|ca|cacc|score|index|dr|rate|bem|der|ftr|f1)$")
LABEL_SUFFIX = re.compile(r"(?:^|[_.])(label|target)$")
FLAG_SUFFIX = re.compile(r"(?:^|[_.])(flagged|flags|detected|backdoored|is_backdoored)$")
AUROC_SUFFIX = re.compile(r"(?:^|[_.])(auroc|auc)$")
_MAX_LIST = 10
SKIPPED = frozenset({"images"})


def flatten(info: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar fields of a (nested) dict: numbers, bools, strings and short lists of scalars.

    The harness's ``images`` entry (paths of saved inspection images) is left out: not a measurement.
    """
    if not isinstance(info, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in info.items():
        name = f"{prefix}{key}"
        if not prefix and key in SKIPPED:
            continue
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            if len(value) <= _MAX_LIST and all(isinstance(v, (int, float, str, bool)) for v in value):
                out[name] = list(value)
        elif is_flag(value) or is_number(value) or isinstance(value, str):
            out[name] = value
    return out


def is_score(name: str) -> bool:
    """True for fields that measure something (AUROC, accuracy, index, rate …), not choices or counts."""
    return bool(SCORE_SUFFIX.search(name))


def numeric_scores(info: Any) -> dict[str, float]:
    """Score-like numeric (non-bool) fields of one ``defense_info``."""
    return {k: float(v) for k, v in flatten(info).items() if is_number(v) and is_score(k)}


def info_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One column per flattened ``defense_info`` field, aligned with `df`'s index (empty if none)."""
    if "defense_info" not in df:
        return pd.DataFrame(index=df.index)
    return pd.DataFrame([flatten(v) for v in df["defense_info"]], index=df.index)


def summarize(values: pd.Series) -> Any:
    """One display value for a field over seeds: mean of numbers, share of True for flags, else distinct values."""
    values = values.dropna()
    if values.empty:
        return None
    if all(is_flag(v) for v in values):
        return f"{100.0 * sum(values) / len(values):.0f}% true"
    if all(is_number(v) for v in values):
        mean = float(sum(values) / len(values))
        return int(mean) if mean.is_integer() and all(float(v).is_integer() for v in values) else mean
    shown = dict.fromkeys("/".join(map(str, v)) if isinstance(v, list) else str(v) for v in values)
    return ", ".join(shown)
