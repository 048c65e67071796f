"""Build leaderboard matrices from per-cell result records (pure pandas, no rendering)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ebyd_bench.results.schema import BEFORE_FIELDS, EXPOSURE_NUMBERS, METRIC_FIELDS, RECORD_FIELDS
from ebyd_bench.results.store import with_exposure_labels

NO_DEFENSE = "No defense"
CLEAN_ATTACK = "none"
DETECTOR_CATEGORIES = ("model_inspection", "input_filtering")
AGGREGATE_COLUMNS = ("ca", "ca_std", "asr", "asr_std", "n", "tip")
#: the least a frame needs to be tabulated (records from `load_results` have every schema field)
REQUIRED_COLUMNS = ("dataset", "model", "attack", "defense", "ca")
#: record fields coerced to float (NaN where unset); labels too, so a missing one is NaN
FLOAT_COLUMNS = (*METRIC_FIELDS, *BEFORE_FIELDS, *EXPOSURE_NUMBERS, "target")
#: every other record field, plus ``source`` (the store a row came from), is added as None when absent
OPTIONAL_COLUMNS = tuple(c for c in (*RECORD_FIELDS, "source") if c not in REQUIRED_COLUMNS)


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
    """Mean/std (in %) over seeds per (dataset, model, attack, method), plus seed count and tooltip.

    The grid records one no-defense cell per exposure of a model (to carry the exposure's
    read-off); they are one experiment, so each model counts once in the "No defense" column.
    """
    keys = ["dataset", "model", "attack", "method"]
    repeats = (df["method"] == NO_DEFENSE) & df.duplicated([*keys, "seed", "cache_key"])
    grouped = df[~repeats].groupby(keys, dropna=False, sort=True)
    agg = grouped.agg(ca=("ca", "mean"), ca_std=("ca", "std"), asr=("asr", "mean"),
                      asr_std=("asr", "std"), n=("ca", "size"))
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
