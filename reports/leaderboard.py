"""Render the leaderboard (self-contained HTML and standalone LaTeX) from result records."""

from __future__ import annotations

import math
import os
import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from benchmark.io import atomic_write_text

from . import tables

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "%": r"\%", "&": r"\&",
    "#": r"\#", "$": r"\$", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}",
}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX_SPECIAL) + "|[\u0391-\u03c9]")
_GREEK_CAPITALS = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}


def _greek(char: str) -> str:
    """Greek letter -> math command (pdflatex's default fonts lack Greek text glyphs, e.g. "eps=8/255")."""
    match = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER (\w+)", unicodedata.name(char, ""))
    if not match:
        return char
    word = match.group(2).lower().replace("lamda", "lambda")
    word = word if match.group(1) == "SMALL" else word.capitalize()
    return char if word == "omicron" or (word[0].isupper() and word not in _GREEK_CAPITALS) else f"$\\{word}$"


def tex_escape(value: Any) -> str:
    """Escape LaTeX special characters in one pass (so inserted backslashes are not re-escaped)."""
    return _TEX_RE.sub(lambda m: _TEX_SPECIAL.get(m.group(0)) or _greek(m.group(0)), str(value))


def _num(value: float | None, missing: str, signed: bool = False) -> str:
    """Two-decimal number, or `missing` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    value = round(float(value), 2) + 0.0  # avoid "-0.00"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _html_num(v: float | None) -> str:
    """HTML cell number (en dash when missing)."""
    return _num(v, "\u2013")


def _html_signed(v: float | None) -> str:
    """HTML signed deviation, e.g. "-2.00"."""
    return _num(v, "\u2013", signed=True)


def _tex_num(v: float | None) -> str:
    """TeX cell number ("--" when missing)."""
    return _num(v, "--")


def _tex_signed(v: float | None) -> str:
    """TeX signed deviation in math mode, so the minus sign is a real minus."""
    text = _num(v, "--", signed=True)
    return text if text == "--" else f"${text}$"


def _clean(value: Any) -> Any:
    """NaN -> None so templates can test `is none`."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _section(df: pd.DataFrame, agg: pd.DataFrame, dataset: str, model: str) -> dict[str, Any]:
    """Template context of one (dataset, model) table: cells, averages, deltas, exposure, notes."""
    methods = tables.method_order(agg["method"])
    cells = {(r.attack, r.method): {k: _clean(getattr(r, k)) for k in ("ca", "ca_std", "asr", "asr_std", "n", "tip")}
             for r in agg.itertuples(index=False)}
    avg = tables.averages(agg)
    delta = tables.deltas(avg)
    return {
        "dataset": dataset,
        "model": model,
        "notes": tables.unique_text([*df["dataset_note"], *df["model_note"]]),
        "methods": methods,
        "rows": [{"attack": a, "cells": [cells.get((a, m)) for m in methods]}
                 for a in tables.attack_order(agg["attack"])],
        "average": [{"ca": _clean(avg.at[m, "ca"]), "asr": _clean(avg.at[m, "asr"])} for m in methods],
        "delta": None if delta is None else [
            None if m not in delta.index else {"ca": _clean(delta.at[m, "ca"]), "asr": _clean(delta.at[m, "asr"])}
            for m in methods],
        "exposure": [{k: _clean(v) for k, v in r.items()}
                     for r in tables.exposure_table(df).to_dict("records")],
    }


def build_context(records: pd.DataFrame) -> dict[str, Any]:
    """Everything the templates need, as plain Python values (no pandas objects)."""
    df = tables.normalize(records)
    agg = tables.aggregate(df) if not df.empty else df
    sections = [
        _section(df[(df["dataset"] == d) & (df["model"] == m)],
                 agg[(agg["dataset"] == d) & (agg["model"] == m)], d, m)
        for d, m in sorted(set(zip(df["dataset"], df["model"])))
    ]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return {"sections": sections, "provenance": tables.provenance(df), "generated": generated,
            "no_defense": tables.NO_DEFENSE, "wide": any(len(s["methods"]) > 3 for s in sections)}


def _environment(tex: bool) -> jinja2.Environment:
    """HTML env (autoescaped) or TeX env (\\BLOCK{}/\\VAR{} delimiters, `tex` escape filter)."""
    options: dict[str, Any] = dict(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    if tex:
        options.update(block_start_string=r"\BLOCK{", block_end_string="}",
                       variable_start_string=r"\VAR{", variable_end_string="}",
                       comment_start_string=r"\#{", comment_end_string="}", autoescape=False)
    else:
        options.update(autoescape=True)
    env = jinja2.Environment(**options)
    env.filters.update(num=_tex_num if tex else _html_num, signed=_tex_signed if tex else _html_signed,
                       tex=tex_escape)
    return env


def render_leaderboard(records: pd.DataFrame, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write `leaderboard.html` and `leaderboard.tex` into `out_dir`; return {"html": path, "tex": path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context = build_context(records)
    paths = {"html": out / "leaderboard.html", "tex": out / "leaderboard.tex"}
    for kind, path in paths.items():
        template = _environment(tex=kind == "tex").get_template(f"leaderboard.{kind}.j2")
        atomic_write_text(path, template.render(**context))
    return paths
