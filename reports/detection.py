"""Detection rates derived generically from record fields (docs/methods.md §6.3), in %.

Three tasks, recognised by field-name suffix so that new detectors need no report code:

* ``label``  — a label guess (``*_label``, e.g. ``nc_label``; or a list of flagged labels
  ``*_flagged``) is a hit when it equals / contains the attack's true target. The exposure
  read-off (``exposed_label``) is scored the same way, once per exposure, as method "<EXP> read-off".
* ``model``  — a boolean verdict (``*_flagged``, ``*_detected``, ``*_backdoored``): share of models
  flagged (on the clean control ``none`` that is the false-positive rate).
* ``sample`` — an input-level AUROC (``*_auroc``, ``*_auc``), shown in %.

Label hits need a backdoor, so the clean control is left out of the ``label`` task.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .fields import AUROC_SUFFIX, FLAG_SUFFIX, LABEL_SUFFIX, flatten
from .tables import CLEAN_ATTACK, attack_order, is_flag, is_missing, is_number

COLUMNS = ["dataset", "model", "attack", "method", "seed", "task", "measure", "value"]
TASKS = {"label": "label detection (hit rate)", "model": "model flagged (rate)", "sample": "sample detection (AUROC)"}


def _field_rates(info: Any, target: Any, backdoored: bool) -> list[tuple[str, str, float]]:
    """(task, measure, value in %) for every detection-like field of one ``defense_info``."""
    out = []
    for name, v in flatten(info).items():
        if AUROC_SUFFIX.search(name) and is_number(v):
            out.append(("sample", name, 100.0 * v if v <= 1.0 else float(v)))
        elif FLAG_SUFFIX.search(name) and is_flag(v):
            out.append(("model", name, 100.0 * bool(v)))
        elif backdoored and is_number(target) and FLAG_SUFFIX.search(name) and isinstance(v, list):
            out.append(("label", name, 100.0 * (int(target) in v)))
        elif backdoored and is_number(target) and LABEL_SUFFIX.search(name) and is_number(v):
            out.append(("label", name, 100.0 * (int(v) == int(target))))
    return out


def detection_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (record, detection measure), from normalized records."""
    rows = []
    for r in df.itertuples(index=False):
        backdoored = r.attack.lower() != CLEAN_ATTACK
        base = {"dataset": r.dataset, "model": r.model, "attack": r.attack, "seed": r.seed}
        for task, measure, value in _field_rates(r.defense_info, r.target, backdoored):
            rows.append({**base, "method": r.method, "task": task, "measure": measure, "value": value})
    readoff = df[~df["exposure"].map(is_missing) & df["exposed_label"].notna() & df["target"].notna()
                 & (df["attack"].str.lower() != CLEAN_ATTACK)]
    once = readoff.drop_duplicates(subset=["dataset", "model", "attack", "exposure", "seed"])
    for r in once.itertuples(index=False):
        rows.append({"dataset": r.dataset, "model": r.model, "attack": r.attack, "seed": r.seed,
                     "method": f"{str(r.exposure).upper()} read-off", "task": "label", "measure": "exposed_label",
                     "value": 100.0 * (int(r.exposed_label) == int(r.target))})
    return pd.DataFrame(rows, columns=COLUMNS)


def detection_matrix(rows: pd.DataFrame) -> pd.DataFrame:
    """Attack × (task, method, measure) means over seeds for one slice, attacks in leaderboard order."""
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(index="attack", columns=["task", "method", "measure"], values="value", aggfunc="mean")
    return table.reindex(index=attack_order(table.index)).sort_index(axis=1)
