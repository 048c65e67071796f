"""The leaderboard: one self-contained HTML page (and a LaTeX summary) from any number of result stores.

Per (dataset, model) the page shows the DER ranking, the attack × defense CA/ASR matrix with
averages and deviation from no defense, the exposure table, detection rates and method outputs
when records carry them, the figures (embedded PNG), and the provenance row of every cell that
each matrix number links to. Nothing is loaded from the network: styles, script and images are inline.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ebyd_bench.results.schema import DETECTION_FIELDS

from . import detection, fields, provenance, scores, tables
from .render import render_file, tex_escape  # noqa: F401  (tex_escape: public re-export)


def _clean(value: Any) -> Any:
    """NaN -> None so templates can test `is none`."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _first_anchor(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(attack, method) -> provenance anchor of its first record (lowest seed); also for "<EXP> read-off"."""
    ordered = df.assign(pos=range(len(df))).sort_values(["seed", "pos"], na_position="last")
    links = {}
    for r in ordered.iloc[::-1].itertuples(index=False):
        links[(r.attack, r.method)] = provenance.anchor(r.cell_key, r.pos)
        if not tables.is_missing(r.exposure):
            links[(r.attack, f"{str(r.exposure).upper()} read-off")] = links[(r.attack, r.method)]
    return links


def _matrix(df: pd.DataFrame, agg: pd.DataFrame, links: dict[tuple[str, str], str]) -> dict[str, Any]:
    """Attack × method cells (mean/std in %, tooltip, link, marks of degenerate outcomes), averages and
    deltas vs no defense."""
    if agg.empty:
        return {"methods": [], "rows": [], "average": [], "delta": None, "flags": []}
    methods = tables.method_order(agg["method"])
    cells = {(r.attack, r.method): {**{k: _clean(getattr(r, k)) for k in tables.AGGREGATE_COLUMNS},
                                    "href": "#" + links[(r.attack, r.method)], "marks": tables.flags_of(r.degenerate)}
             for r in agg.itertuples(index=False)}
    present = tables.flags_of(tables.merge_flags(agg["degenerate"]))
    avg = tables.averages(agg)
    delta = tables.deltas(avg)
    return {
        "methods": methods,
        "rows": [{"attack": a, "cells": [cells.get((a, m)) for m in methods]}
                 for a in tables.attack_order(agg["attack"])],
        "average": [{"ca": _clean(avg.at[m, "ca"]), "asr": _clean(avg.at[m, "asr"])} for m in methods],
        "delta": None if delta is None else [
            None if m not in delta.index else {"ca": _clean(delta.at[m, "ca"]), "asr": _clean(delta.at[m, "asr"])}
            for m in methods],
        "flags": present,  # the degenerate outcomes marked in this matrix, for its footnote
    }


def _linked(attack: str, method: str, value: Any, links: dict[tuple[str, str], str]) -> dict[str, Any]:
    """A table value with the provenance link of its (attack, method)."""
    href = links.get((attack, method))
    return {"v": _clean(value), "href": "#" + href if href else None}


def _detection(df: pd.DataFrame, links: dict[tuple[str, str], str]) -> dict[str, Any] | None:
    """Detection-rate matrix (attack × task/method/measure) with an average row, or None."""
    matrix = detection.detection_matrix(detection.detection_rows(df))
    if matrix.empty:
        return None
    columns = [{"task": detection.TASKS[t], "method": m, "measure": s} for t, m, s in matrix.columns]
    return {"columns": columns,
            "rows": [{"attack": a, "vals": [_linked(a, c["method"], v, links) for c, v in zip(columns, matrix.loc[a])]}
                     for a in matrix.index],
            "average": [_clean(v) for v in matrix.mean()]}


def _outputs(df: pd.DataFrame, links: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    """Per method: its scalar ``defense_info`` fields per attack (mean over seeds), for methods that have any.

    The standard detection fields (``model_score``, ``label_scores``) are left out: they feed the grid
    statistics (detection AUROCs), and a defense's own fields already show what they are made of."""
    info = fields.info_frame(df)
    info = info.drop(columns=[c for c in DETECTION_FIELDS if c in info.columns])
    out = []
    for method in tables.method_order(df["method"]):
        mask = (df["method"] == method).to_numpy()
        part = info[mask].dropna(axis=1, how="all")
        if part.empty or not len(part.columns):
            continue
        names = sorted(part.columns)
        attacks = df["attack"][mask]
        rows = [{"attack": a, "vals": [_linked(a, method, fields.summarize(part.loc[attacks == a, n]), links)
                                       for n in names]}
                for a in tables.attack_order(attacks)]
        out.append({"method": method, "fields": names, "rows": rows})
    return out


def _section(df: pd.DataFrame, index: int, dataset: str, model: str, with_figures: bool) -> dict[str, Any]:
    """Template context of one (dataset, model) section (the matrix and ranking hold removal methods only)."""
    from .figures import embedded

    agg = tables.removal_aggregate(df)
    links = _first_anchor(df)
    return {
        "id": f"sec-{index}", "dataset": dataset, "model": model,
        "notes": tables.unique_text([*df["dataset_note"], *df["model_note"]]),
        **_matrix(df, agg, links),
        "ranking": scores.ranking(df, agg),
        "exposure": [{k: _clean(v) for k, v in r.items()} for r in tables.exposure_table(df).to_dict("records")],
        "detection": _detection(df, links),
        "outputs": _outputs(df, links),
        "cells": provenance.cell_rows(df),
        "figures": embedded(df, agg) if with_figures else [],
    }


def build_context(records: pd.DataFrame, with_figures: bool = False) -> dict[str, Any]:
    """Everything the templates need, as plain Python values (no pandas objects)."""
    df = tables.normalize(records)
    sections = [_section(part, i, d, m, with_figures)
                for i, (d, m, part) in enumerate(tables.slices(df))]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return {"sections": sections, "provenance": provenance.summary(df), "generated": generated,
            "no_defense": tables.NO_DEFENSE, "wide": any(len(s["methods"]) > 3 for s in sections),
            "score_name": scores.SCORE_NAME, "score_doc": scores.SCORE_DOC, "tasks": detection.TASKS}


def render_leaderboard(records: pd.DataFrame, out_dir: str | os.PathLike[str],
                       figures: bool = True) -> dict[str, Path]:
    """Write `leaderboard.html` (figures embedded unless `figures=False`), `leaderboard.tex` and
    `leaderboard.md` (for terminals, CI job summaries and issues)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context = build_context(records, with_figures=figures)
    return {kind: render_file(out / f"leaderboard.{kind}", f"leaderboard.{kind}.j2", context)
            for kind in ("html", "tex", "md")}
