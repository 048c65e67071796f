"""Paper-ready booktabs tables shaped like EBYD's Tables III–VII and X, from whatever results exist.

One fragment per table and (dataset, model) — ``OUT/<table>-<dataset>-<model>.tex``, a ``table``
float with caption and ``\\label{tab:<file stem>}`` to ``\\input`` into a paper (needs
``\\usepackage{booktabs}`` and, for wide tables, ``graphicx``) — plus ``OUT/tables.tex``, a
standalone document that inputs them all (compile it to proof-read). Tables without data are skipped.

Bold marks, in each row, the best defense or exposure: highest CA, lowest ASR, highest BEM,
highest AUROC; "No defense" is never a candidate. Values are % except BEM (a ratio).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Iterable

import pandas as pd

from . import detection, tables
from .render import fmt, render_file, slug, tex_escape

TRIGGER_SUFFIXES = ("_l1", "_norm", "mask_l1", "trigger_l1")
RECOVERY_WORD = "recover"


@dataclass
class TexTable:
    """A formatted booktabs table: header groups, column headers, body rows and footer rows (TeX strings)."""

    name: str
    caption: str
    stub: str
    groups: list[tuple[str, int]]
    columns: list[str]
    rows: list[list[str]]
    footer: list[list[str]] = field(default_factory=list)
    note: str = ""
    #: degenerate outcomes marked in the body (RP returned unpruned, every unit pruned, CA at chance)
    flags: list[tables.Flag] = field(default_factory=list)

    @property
    def wide(self) -> bool:
        return len(self.columns) > 8


def _cell(value: float, best: bool, signed: bool = False, digits: int = 2) -> str:
    """One number as TeX (bold when best, "--" when missing)."""
    text = fmt(value, "--", signed=signed, digits=digits)
    if signed and text != "--":
        text = f"${text}$"
    return rf"\textbf{{{text}}}" if best and text != "--" else text


def _best(values: list[float], better: str | None, candidates: list[bool]) -> list[bool]:
    """Mask of the best candidate values ("max"/"min"; ties all bold; none if `better` is None)."""
    pool = [v for v, c in zip(values, candidates) if c and not (v is None or math.isnan(v))]
    if better is None or not pool:
        return [False] * len(values)
    target = max(pool) if better == "max" else min(pool)
    return [c and v is not None and not math.isnan(v) and math.isclose(v, target) for v, c in zip(values, candidates)]


def _row(label: str, values: list[float], better: list[str | None], candidates: list[bool],
         digits: int = 2) -> list[str]:
    """A body row: values grouped by orientation (each orientation bolded separately)."""
    bold = [False] * len(values)
    for orient in {b for b in better if b}:
        idx = [i for i, b in enumerate(better) if b == orient]
        mask = _best([values[i] for i in idx], orient, [candidates[i] for i in idx])
        for i, m in zip(idx, mask):
            bold[i] = m
    return [tex_escape(label)] + [_cell(v, b, digits=digits) for v, b in zip(values, bold)]


def _matrix_table(name: str, caption: str, matrix: pd.DataFrame, better: str | None, digits: int = 2,
                  note: str = "", candidates: Iterable[bool] | None = None) -> TexTable:
    """Rows × columns matrix with an average row (the clean control "none" is left out of it)."""
    cols = [str(c) for c in matrix.columns]
    cand = list(candidates) if candidates is not None else [True] * len(cols)
    rows = [_row(a, list(matrix.loc[a]), [better] * len(cols), cand, digits) for a in matrix.index]
    attacked = [a for a in matrix.index if str(a).lower() != tables.CLEAN_ATTACK]
    avg = matrix.loc[attacked].mean() if attacked else matrix.mean()
    footer = [_row("Average", list(avg), [better] * len(cols), cand, digits)]
    return TexTable(name, caption, "Attack", [], [tex_escape(c) for c in cols], rows, footer, note)


def _marked(text: str, flags: list[tables.Flag]) -> str:
    """A TeX cell with the superscript marks of its degenerate outcomes (see :data:`tables.FLAGS`)."""
    return text + r"\textsuperscript{" + "".join(f.tex for f in flags) + "}" if flags else text


def _flag_matrix(agg: pd.DataFrame) -> pd.DataFrame:
    """Attack × method matrix of each aggregate's flag codes ("" where none)."""
    return tables.matrix(agg, "degenerate").fillna("")


def removal_table(name: str, caption: str, agg: pd.DataFrame, metric: str = "CA") -> TexTable | None:
    """Table X / V / VII: CA and ASR per attack and defense, averages and deviation from no defense."""
    if agg.empty:
        return None
    ca, asr = tables.matrix(agg, "ca"), tables.matrix(agg, "asr")
    methods = list(ca.columns)
    better = ["max", "min"] * len(methods)
    cand = [m != tables.NO_DEFENSE for m in methods for _ in (0, 1)]
    values = lambda a: [v for m in methods for v in (ca.at[a, m], asr.at[a, m])]  # noqa: E731
    rows = [_row(a, values(a), better, cand) for a in ca.index]
    flags = _flag_matrix(agg) if "degenerate" in agg else None
    if flags is not None:
        for row, attack in zip(rows, ca.index):
            for i, method in enumerate(methods):
                row[1 + 2 * i] = _marked(row[1 + 2 * i], tables.flags_of(flags.at[attack, method]))
    avg = tables.averages(agg)
    footer = [_row("Average", [v for m in methods for v in (avg.at[m, "ca"], avg.at[m, "asr"])], better, cand)]
    delta = tables.deltas(avg)
    if delta is not None:
        footer.append([rf"$\Delta$ vs.\ {tex_escape(tables.NO_DEFENSE)}"] + [
            _cell(delta.at[m, k] if m in delta.index else math.nan, False, signed=True)
            for m in methods for k in ("ca", "asr")])
    groups = [(tex_escape(m), 2) for m in methods]
    present = tables.flags_of(tables.merge_flags(agg["degenerate"])) if "degenerate" in agg else []
    return TexTable(name, caption, "Attack", groups, [metric, "ASR"] * len(methods), rows, footer, flags=present)


def bem_table(name: str, caption: str, df: pd.DataFrame) -> TexTable | None:
    """Table III: BEM per attack (rows) and exposure (columns)."""
    exp = tables.exposure_table(df).dropna(subset=["bem"])
    if exp.empty:
        return None
    matrix = exp.pivot(index="attack", columns="exposure", values="bem")
    return _matrix_table(name, caption, matrix.reindex(tables.attack_order(matrix.index)), "max")


def _measure_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Attack × "method (measure)" matrix of mean values (measure dropped when a method has one)."""
    matrix = rows.pivot_table(index="attack", columns=["method", "measure"], values="value", aggfunc="mean")
    per_method = pd.Series([m for m, _ in matrix.columns]).value_counts()
    matrix.columns = [m if per_method[m] == 1 else f"{m} ({s})" for m, s in matrix.columns]
    return matrix.reindex(tables.attack_order(matrix.index))


def auroc_table(name: str, caption: str, df: pd.DataFrame) -> TexTable | None:
    """Table IV: input-level detection AUROC (%) of each detector, e.g. STRIP vs CUL+STRIP, plus gains."""
    rows = detection.detection_rows(df)
    rows = rows[rows["task"] == "sample"]
    if rows.empty:
        return None
    matrix = _measure_columns(rows)
    table = _matrix_table(name, caption, matrix, "max")
    avg = matrix.loc[[a for a in matrix.index if a.lower() != tables.CLEAN_ATTACK]].mean()
    base = {c: c.split("+", 1)[1] for c in matrix.columns if "+" in c and c.split("+", 1)[1] in matrix.columns}
    if base:
        table.footer.append(["Gain over unexposed"] + [
            _cell(avg[c] - avg[base[c]], False, signed=True) if c in base else "--" for c in matrix.columns])
    return table


def summary_table(name: str, caption: str, df: pd.DataFrame, agg: pd.DataFrame) -> TexTable | None:
    """Table VI: one row per attack over the four tasks, with whatever columns exist.

    Label detection (hit rate %, incl. the exposure read-off), trigger recovery (``*_l1``/``*_norm``
    fields), sample detection (AUROC %) and removal (CA/ASR of EBYD's exposed RP).
    """
    parts: list[tuple[str, pd.DataFrame]] = []
    rows = detection.detection_rows(df)
    for task, title in (("label", "Label detection"), ("sample", "Sample detection")):
        part = rows[rows["task"] == task]
        if not part.empty:
            parts.append((title, _measure_columns(part)))
    info = _trigger_fields(df)
    if not info.empty:
        parts.append(("Trigger", info))
    ebyd = agg[agg["method"].map(lambda m: tables.is_ebyd(m) and "+" in m)]
    removal_flags: dict[int, pd.Series] = {}  # index of a part -> its flag codes per attack
    for method in tables.method_order(ebyd["method"]):
        part = ebyd[ebyd["method"] == method].set_index("attack")
        if "degenerate" in part:
            removal_flags[len(parts)] = part["degenerate"]
        parts.append((f"Removal ({method})", part[["ca", "asr"]].rename(columns={"ca": "CA", "asr": "ASR"})))
    if len(parts) < 2:
        return None
    attacks = tables.attack_order(a for _, p in parts for a in p.index)
    matrix = pd.concat([p.reindex(attacks) for _, p in parts], axis=1)
    table = _matrix_table(name, caption, matrix, None)
    table.groups = [(tex_escape(title), len(p.columns)) for title, p in parts]
    offsets = [1 + sum(len(p.columns) for _, p in parts[:i]) for i in range(len(parts))]
    present: set[str] = set()
    for index, codes in removal_flags.items():
        for row, attack in zip(table.rows, attacks):
            flags = tables.flags_of(codes.get(attack, ""))
            row[offsets[index]] = _marked(row[offsets[index]], flags)  # the part's CA column
            present.update(f.code for f in flags)
    table.flags = [f for f in tables.FLAGS if f.code in present]
    return table


def _trigger_fields(df: pd.DataFrame) -> pd.DataFrame:
    """Attack × "method field" means of trigger-size fields (``*_l1``, ``*_norm``) in ``defense_info``."""
    from .fields import info_frame

    info = info_frame(df)
    cols = [c for c in info.columns if c.endswith(TRIGGER_SUFFIXES)]
    if not cols:
        return pd.DataFrame()
    long = info[cols].apply(pd.to_numeric, errors="coerce").assign(attack=df["attack"], method=df["method"])
    long = long.melt(id_vars=["attack", "method"], var_name="measure", value_name="value").dropna()
    return _measure_columns(long) if not long.empty else pd.DataFrame()


def is_text(df: pd.DataFrame) -> bool:
    """Text records (their ``domain``) get Table VII instead of Table X."""
    return "domain" in df and bool((df["domain"] == "text").any())


_BOLD = "Bold: best per row (highest {ca}, lowest ASR; No defense excluded)."
#: caption per table; {where} is the (dataset / model) slice
CAPTIONS = MappingProxyType({
    "table3-bem": "Backdoor Exposure Metric (BEM) per attack and exposure, {where}. Bold: highest per row.",
    "table4-auroc": "Input-level detection AUROC (\\%) per attack, {where}. Bold: highest per row.",
    "table5-recovery": "Recovery only vs.\\ RP: CA and ASR (\\%), {where}. " + _BOLD.format(ca="CA"),
    "table6-summary": "Four-task summary per attack, {where}: label detection hit rate, trigger size, "
                      "sample-detection AUROC and removal (all \\% except trigger size).",
    "table7-text": "CACC and ASR (\\%) per attack and defense, {where}. " + _BOLD.format(ca="CACC"),
    "table10-removal": "Backdoor removal: CA and ASR (\\%) per attack and defense, averages and deviation from "
                       "no defense, {where}. " + _BOLD.format(ca="CA"),
})


def slice_tables(dataset: str, model: str, df: pd.DataFrame) -> list[TexTable]:
    """Every paper table with data for one (dataset, model) slice."""
    agg = tables.removal_aggregate(df)
    where = f"{tex_escape(dataset)} / {tex_escape(model)}"

    def named(key: str) -> tuple[str, str]:
        return slug(key, dataset, model), CAPTIONS[key].format(where=where)

    recovery = agg[agg["method"].map(lambda m: RECOVERY_WORD in m.lower() or tables.is_ebyd(m))]
    has_recovery = recovery["method"].str.lower().str.contains(RECOVERY_WORD).any()
    built = [
        bem_table(*named("table3-bem"), df),
        auroc_table(*named("table4-auroc"), df),
        removal_table(*named("table5-recovery"), recovery) if has_recovery else None,
        summary_table(*named("table6-summary"), df, agg),
        (removal_table(*named("table7-text"), agg, metric="CACC") if is_text(df)
         else removal_table(*named("table10-removal"), agg)),
    ]
    notes = "; ".join(tex_escape(n) for n in tables.unique_text([*df["dataset_note"], *df["model_note"]]))
    built = [t for t in built if t is not None]
    for t in built:
        t.note = notes
    return built


def render_tables(records: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write one fragment per table plus `tables.tex` (inputs them all); returns the paths, tables.tex last."""
    df = tables.normalize(records)
    out = Path(out_dir)
    built = [t for d, m, part in tables.slices(df) for t in slice_tables(d, m, part)]
    paths = [render_file(out / f"{t.name}.tex", "paper_table.tex.j2", {"t": t}) for t in built]
    wide = any(t.wide or len(t.columns) > 6 for t in built)
    paths.append(render_file(out / "tables.tex", "tables.tex.j2", {"names": [t.name for t in built], "wide": wide}))
    return paths
