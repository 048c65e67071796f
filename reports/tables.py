"""Build leaderboard matrices from per-cell result records (pure pandas, no rendering)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ebyd_bench.results.schema import (BEFORE_FIELDS, EXPOSURE_NUMBERS, METRIC_FIELDS, RECORD_FIELDS,
                                       WEAK_BACKDOOR_ASR)
from ebyd_bench.results.store import with_exposure_labels

NO_DEFENSE = "No defense"
CLEAN_ATTACK = "none"
DETECTOR_CATEGORIES = ("model_inspection", "input_filtering")
AGGREGATE_COLUMNS = ("ca", "ca_std", "asr", "asr_std", "n", "tip", "degenerate")
#: the least a frame needs to be tabulated (records from `load_results` have every schema field)
REQUIRED_COLUMNS = ("dataset", "model", "attack", "defense", "ca")
#: record fields coerced to float (NaN where unset); labels too, so a missing one is NaN
FLOAT_COLUMNS = (*METRIC_FIELDS, *BEFORE_FIELDS, *EXPOSURE_NUMBERS, "target")
#: every other record field, plus ``source`` (the store a row came from), is added as None when absent
OPTIONAL_COLUMNS = tuple(c for c in (*RECORD_FIELDS, "source") if c not in REQUIRED_COLUMNS)


@dataclass(frozen=True)
class Flag:
    """A degenerate outcome every table marks next to the number: its symbol (Markdown, HTML), its TeX
    symbol (text mode) and the footnote that explains it."""

    code: str
    symbol: str
    tex: str
    text: str


#: degenerate outcomes, in the order marks are written (see :func:`record_flags`)
FLAGS = (
    Flag("infeasible", "†", r"\dag", "infeasible: no setting met the method's D_d criterion, so the model "
         "was returned unpruned"),
    Flag("all_pruned", "‡", r"\ddag", "every unit was pruned"),
    Flag("chance", "§", r"\S", "clean accuracy at chance level, within 5 points of 1/classes: a degenerate model"),
    Flag("not_implanted", "¶", r"\P", f"the victim's ASR before any defense is below {100 * WEAK_BACKDOOR_ASR:.0f} %: "
         "its backdoor was not implanted, so a defense's ASR on it measures nothing"),
)
#: classes of the built-in datasets, for the chance level (another dataset: the length of a record's
#: ``label_scores``, else no chance mark)
DATASET_CLASSES = {"cifar10": 10, "sst2": 2, "imdb": 2, "agnews": 4, "twitter": 2}
CHANCE_MARGIN = 0.05


def record_flags(info: Any, ca: Any, classes: int | None, asr_before: Any = None) -> str:
    """The degenerate outcomes of one record as comma-joined :data:`FLAGS` codes ("" when none): a
    ``<prefix>_infeasible`` defense field set (RP, ANP or FP returned the model unpruned), a
    ``<prefix>_pruned`` count equal to its ``<prefix>_masks_total``/``<prefix>_units`` (every unit pruned),
    a clean accuracy within :data:`CHANCE_MARGIN` of 1 / ``classes``, or a victim whose ``asr_before`` is
    below :data:`~ebyd_bench.results.schema.WEAK_BACKDOOR_ASR` (None/NaN for a clean control: no mark)."""
    info = info if isinstance(info, dict) else {}
    found = set()
    if any(k.endswith("_infeasible") and v is True for k, v in info.items()):
        found.add("infeasible")
    for key, pruned in info.items():
        if key.endswith("_pruned") and _count(pruned):
            prefix = key[:-len("_pruned")]
            total = next((info[t] for t in (f"{prefix}_masks_total", f"{prefix}_units") if _count(info.get(t))), None)
            if total and pruned >= total:
                found.add("all_pruned")
    if classes and is_number(ca) and ca <= 1.0 / classes + CHANCE_MARGIN:
        found.add("chance")
    if is_number(asr_before) and asr_before < WEAK_BACKDOOR_ASR:
        found.add("not_implanted")
    return ",".join(f.code for f in FLAGS if f.code in found)


def _count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_flag(value: Any) -> bool:
    """A Python or numpy bool."""
    return isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A real number, possibly infinite (not a bool, None or NaN); numpy scalars included."""
    return isinstance(value, numbers.Real) and not is_flag(value) and not math.isnan(value)


def flags_of(codes: Any) -> list[Flag]:
    """The :class:`Flag` objects of a comma-joined code string (a record's or aggregate's ``degenerate``)."""
    if not isinstance(codes, str) or not codes:
        return []
    present = set(codes.split(","))
    return [f for f in FLAGS if f.code in present]


def merge_flags(values: Iterable[Any]) -> str:
    """The union of comma-joined flag code strings, in :data:`FLAGS` order."""
    present = {c for v in values if isinstance(v, str) for c in v.split(",") if c}
    return ",".join(f.code for f in FLAGS if f.code in present)


def dataset_classes(df: pd.DataFrame) -> dict[str, int]:
    """dataset -> number of classes: :data:`DATASET_CLASSES`, else the longest ``label_scores`` seen."""
    out: dict[str, int] = {}
    for dataset, info in zip(df["dataset"], df["defense_info"]):
        scores = info.get("label_scores") if isinstance(info, dict) else None
        if isinstance(scores, (list, dict)) and len(scores) > 1:
            out[dataset] = max(out.get(dataset, 0), len(scores))
    return {d: DATASET_CLASSES.get(d, out.get(d)) for d in set(df["dataset"])}


def is_missing(value: Any) -> bool:
    """True for None/NaN/pd.NA and for empty or "none" strings (JSON nulls arrive in many shapes)."""
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "none", "nan")


def method_label(exposure: Any, defense: Any) -> str:
    """Column label of a defense method: "No defense", "RP" or "CUL+RP" (exposure-prefixed)."""
    if is_missing(defense):
        return NO_DEFENSE
    name = str(defense).strip().upper()
    return name if is_missing(exposure) else f"{str(exposure).strip().upper()}+{name}"


def is_ebyd(method: str) -> bool:
    """EBYD's removal: RP on an exposed model ("CUL+RP") or its no-exposure ablation ("RP")."""
    return method.upper() == "RP" or method.upper().endswith("+RP")


def wall_seconds(timings: Any) -> float:
    """Wall-clock of one cell: `timings["total"]` if present, else the sum of all stage times."""
    if not isinstance(timings, dict):
        return math.nan
    if isinstance(timings.get("total"), (int, float)):
        return float(timings["total"])
    return float(sum(v for v in timings.values() if isinstance(v, (int, float))))


def normalize(records: pd.DataFrame) -> pd.DataFrame:
    """Validate columns, add missing optional ones, drop repeated cells, coerce numbers, add `method`/`wall_s`."""
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(f"results records lack required columns: {missing}")
    df = records.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = with_exposure_labels(df)
    # the same cell in several merged stores is one experiment, not several seeds: keep its last record
    repeated = df["cell_key"].map(lambda k: not is_missing(k)) & df.duplicated("cell_key", keep="last")
    df = df[~repeated]
    for col in FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("dataset", "model", "attack"):
        df[col] = df[col].astype(str)
    # a defense that ignores the exposure is labelled without its prefix when the record says so
    exposures = [None if isinstance(u, (bool, np.bool_)) and not u else e
                 for e, u in zip(df["exposure"], df["defense_uses_exposure"])]
    names = [d if is_missing(lbl) else lbl for d, lbl in zip(df["defense"], df["defense_label"])]
    df["method"] = [method_label(e, d) for e, d in zip(exposures, names)]
    df["wall_s"] = df["timings"].map(wall_seconds)
    classes = dataset_classes(df)
    df["degenerate"] = [record_flags(info, ca, classes.get(d), before)
                        for info, ca, d, before in zip(df["defense_info"], df["ca"], df["dataset"], df["asr_before"])]
    return df


def attack_order(attacks: Iterable[str]) -> list[str]:
    """Attacks sorted by name, with the clean model ("none") last."""
    return sorted(set(attacks), key=lambda a: (a.lower() == CLEAN_ATTACK, a))


def method_order(methods: Iterable[str]) -> list[str]:
    """Methods sorted by label, with "No defense" first (it is the reference column)."""
    return sorted(set(methods), key=lambda m: (m != NO_DEFENSE, m))


def _tooltip(group: pd.DataFrame) -> str:
    """One line per seed: seed, cell_key, cache_key, wall-clock and the prior-matched ASR, for hover tooltips."""
    lines = []
    for row in group.itertuples(index=False):
        seed = int(row.seed) if isinstance(row.seed, float) and row.seed.is_integer() else row.seed
        parts = [f"seed {seed}" if not is_missing(seed) else "seed ?"]
        parts += [f"{k}={v}" for k, v in (("cell", row.cell_key), ("cache", row.cache_key)) if not is_missing(v)]
        if not math.isnan(row.wall_s):
            parts.append(f"{row.wall_s:.1f} s")
        if not math.isnan(row.asr_prior_matched):
            parts.append(f"ASR at the matched prior {100 * row.asr_prior_matched:.1f}%")
        lines.append(" | ".join(parts))
    return "\n".join(lines)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean/std (in %) over seeds per (dataset, model, attack, method), plus seed count, tooltip and
    ``degenerate`` (the :data:`FLAGS` codes any of its seeds has, comma-joined).

    The grid records one no-defense cell per exposure of a model (to carry the exposure's
    read-off); they are one experiment, so each model counts once in the "No defense" column.
    """
    keys = ["dataset", "model", "attack", "method"]
    repeats = (df["method"] == NO_DEFENSE) & df.duplicated([*keys, "seed", "cache_key"])
    grouped = df[~repeats].groupby(keys, dropna=False, sort=True)
    agg = grouped.agg(ca=("ca", "mean"), ca_std=("ca", "std"), asr=("asr", "mean"),
                      asr_std=("asr", "std"), n=("ca", "size"), degenerate=("degenerate", merge_flags))
    agg[["ca", "ca_std", "asr", "asr_std"]] *= 100.0
    agg.loc[agg["n"] < 2, ["ca_std", "asr_std"]] = math.nan
    agg["tip"] = grouped[["seed", "cell_key", "cache_key", "wall_s", "asr_prior_matched"]].apply(_tooltip)
    return agg.reset_index()


def removal_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Records whose CA/ASR are those of a defended model or pipeline (with a measured CA).

    A method that hands back a model (``defense_returns_model``: removal, or an input filter that
    rewrites inputs, like ONION) belongs in the removal matrix. A detector (NC, STRIP) leaves the
    deployed model as it was, so its CA/ASR are the undefended ones; it belongs in the detection
    tables. For records written before the field existed: a removal category, or metrics that
    differ from the undefended ones (the harness copies those, exactly, for a detector).
    """
    returns = df["defense_returns_model"]
    legacy = returns.map(is_missing)
    changed = (df["ca"] != df["ca_before"]) | ((df["asr"] != df["asr_before"]) & df["asr"].notna())
    inferred = ~df["defense_category"].isin(DETECTOR_CATEGORIES) | changed
    keeps = returns.where(~legacy, inferred).astype(bool)
    return df[keeps & df["ca"].notna()]


def removal_aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """`aggregate` of the removal records of a slice (an empty frame with its columns when there are none)."""
    rows = removal_rows(df)
    if rows.empty:
        return pd.DataFrame(columns=["dataset", "model", "attack", "method", *AGGREGATE_COLUMNS])
    return aggregate(rows)


def matrix(agg: pd.DataFrame, value: str = "ca") -> pd.DataFrame:
    """Attack x method matrix of one aggregated column for one (dataset, model) slice of `aggregate`."""
    table = agg.pivot(index="attack", columns="method", values=value)
    return table.reindex(index=attack_order(agg["attack"]), columns=method_order(agg["method"]))


def averages(agg: pd.DataFrame) -> pd.DataFrame:
    """Per-method mean CA over all attacks and mean ASR over real attacks (clean model excluded)."""
    ca, asr = matrix(agg, "ca"), matrix(agg, "asr")
    attacked = [a for a in asr.index if a.lower() != CLEAN_ATTACK]
    return pd.DataFrame({"ca": ca.mean(axis=0), "asr": asr.loc[attacked].mean(axis=0)})


def deltas(avg: pd.DataFrame) -> pd.DataFrame | None:
    """Average CA/ASR of each method minus "No defense", in points; None without that column."""
    if NO_DEFENSE not in avg.index:
        return None
    return (avg - avg.loc[NO_DEFENSE]).drop(index=NO_DEFENSE)


def exposure_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (attack, exposure): exposed label(s), target, label share, exposed CA/ASR in % and BEM.

    Every exposure is shared by all defenses of its grid row, so each (attack, exposure, seed)
    counts once; the means run over seeds.
    """
    cols = ["exposed_label", "exposed_label_share", "exposed_ca", "exposed_asr", "bem"]
    out_cols = ["attack", "exposure", "target", *cols, "n"]
    rows = df[~df["exposure"].map(is_missing) & df[cols].notna().any(axis=1)]
    if rows.empty:
        return pd.DataFrame(columns=out_cols)
    rows = rows.assign(exposure=rows["exposure"].astype(str).str.upper(), seed=rows["seed"].astype(str))
    rows = rows.drop_duplicates(subset=["attack", "exposure", "seed"])
    out = rows.groupby(["attack", "exposure"], sort=False).agg(
        target=("target", _labels), exposed_label=("exposed_label", _labels),
        exposed_label_share=("exposed_label_share", "mean"), exposed_ca=("exposed_ca", "mean"),
        exposed_asr=("exposed_asr", "mean"), bem=("bem", "mean"), n=("seed", "size"))
    out[["exposed_label_share", "exposed_ca", "exposed_asr"]] *= 100.0
    out = out.reset_index()
    rank = out["attack"].map({a: i for i, a in enumerate(attack_order(out["attack"]))})
    out = out.assign(_rank=rank).sort_values(["_rank", "exposure"]).drop(columns="_rank").reset_index(drop=True)
    return out[out_cols]


def _labels(values: pd.Series) -> str:
    """Distinct class labels as "0" or "0/3"."""
    return "/".join(str(int(v)) for v in sorted(values.dropna().unique()))


def slices(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(dataset, model, rows) for every (dataset, model) pair, sorted."""
    pairs = sorted(set(zip(df["dataset"], df["model"])))
    return [(d, m, df[(df["dataset"] == d) & (df["model"] == m)]) for d, m in pairs]


def unique_text(values: Iterable[Any]) -> list[str]:
    """Distinct non-missing strings, in first-seen order (for notes shared by many rows)."""
    seen: dict[str, None] = {}
    for v in values:
        if not is_missing(v):
            seen.setdefault(str(v).strip(), None)
    return list(seen)
