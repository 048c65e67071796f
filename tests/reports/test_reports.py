"""Tests for the leaderboard reports: matrix values, averages, HTML self-containment, TeX escaping/compilation."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from ebyd_bench.reports import render_leaderboard
from ebyd_bench.reports import tables
from ebyd_bench.reports.leaderboard import build_context, tex_escape

NAN = math.nan
NASTY = r"50% JPEG & q_75 #1 $x$ {a} ~b ^c \d <e>"


def _row(attack: str, exposure: str | None, defense: str, ca: float, asr: float, seed: int = 0, **extra) -> dict:
    """One results.jsonl-like record for cifar10/resnet18."""
    row = dict(dataset="cifar10", model="resnet18", attack=attack, exposure=exposure, defense=defense,
               seed=seed, ca=ca, asr=asr, cell_key=f"{attack}-{defense}-{seed}", cache_key=f"c{seed}",
               exposed_label=0 if exposure else NAN, exposed_ca=0.90 if exposure else NAN,
               exposed_asr=0.95 if exposure else NAN, timings={"train": 10.0, "defense": 2.5},
               hardware={"gpu": "H100"}, provenance={"git_commit": "deadbee", "package_version": "0.1.0"},
               dataset_note="JPEG-re-encoded CIFAR-10", model_note="")
    row.update(extra)
    return row


@pytest.fixture()
def records() -> pd.DataFrame:
    """3 attacks x [No defense, CUL+RP] + clean model; 2 seeds for one cell; a missing cell."""
    rows = [
        _row("badnets", None, "none", 0.9123, 0.99),
        _row("badnets", "cul", "rp", 0.90, 0.02, seed=0),
        _row("badnets", "cul", "rp", 0.88, 0.04, seed=1),
        _row("blended", None, "none", 0.93, 0.97),
        _row("blended", "cul", "rp", 0.91, 0.10),
        _row("wanet", "cul", "none", 0.92, 0.95),  # exposure ran but defense none -> "No defense"
        _row("none", None, "none", 0.94, NAN),
        _row("none", "cul", "rp", 0.93, NAN),
    ]
    return pd.DataFrame(rows)  # wanet x CUL+RP is deliberately missing


def _agg(records: pd.DataFrame) -> pd.DataFrame:
    return tables.aggregate(tables.normalize(records))


@pytest.mark.parametrize("exposure, defense, label", [
    (None, "none", "No defense"), ("cul", "none", "No defense"), ("cul", "rp", "CUL+RP"),
    (None, "rp", "RP"), (NAN, "rp", "RP"), ("none", "rp", "RP"),
])
def test_method_label(exposure, defense, label) -> None:
    assert tables.method_label(exposure, defense) == label


def test_label_drops_exposure_for_defenses_that_ignore_it() -> None:
    rows = pd.DataFrame([_row("badnets", "cul", "ft", 0.9, 0.5, defense_uses_exposure=False),
                         _row("badnets", "cul", "rp", 0.9, 0.1, defense_uses_exposure=True),
                         _row("blended", "cul", "rp", 0.9, 0.1)])
    assert list(tables.normalize(rows)["method"]) == ["FT", "CUL+RP", "CUL+RP"]


def test_matrix_values_and_order(records: pd.DataFrame) -> None:
    agg = _agg(records)
    ca, asr = tables.matrix(agg, "ca"), tables.matrix(agg, "asr")
    assert list(ca.index) == ["badnets", "blended", "wanet", "none"]
    assert list(ca.columns) == ["No defense", "CUL+RP"]
    assert ca.at["badnets", "No defense"] == pytest.approx(91.23)
    assert ca.at["badnets", "CUL+RP"] == pytest.approx(89.0)  # mean of 2 seeds
    assert math.isnan(ca.at["wanet", "CUL+RP"])  # missing cell
    assert math.isnan(asr.at["none", "No defense"])  # clean model has no ASR
    std = tables.matrix(agg, "ca_std")
    assert std.at["badnets", "CUL+RP"] == pytest.approx(math.sqrt(2.0))  # sample std of 90, 88
    assert math.isnan(std.at["badnets", "No defense"])  # single seed -> no std


def test_averages_and_deltas(records: pd.DataFrame) -> None:
    avg = tables.averages(_agg(records))
    assert avg.at["No defense", "ca"] == pytest.approx((91.23 + 93 + 92 + 94) / 4)
    assert avg.at["No defense", "asr"] == pytest.approx((99 + 97 + 95) / 3)
    assert avg.at["CUL+RP", "ca"] == pytest.approx((89 + 91 + 93) / 3)
    assert avg.at["CUL+RP", "asr"] == pytest.approx((3 + 10) / 2)
    delta = tables.deltas(avg)
    assert list(delta.index) == ["CUL+RP"]
    assert delta.at["CUL+RP", "asr"] == pytest.approx(6.5 - 97.0)
    assert tables.deltas(avg.drop(index="No defense")) is None


def test_exposure_table_dedupes_across_defenses(records: pd.DataFrame) -> None:
    exp = tables.exposure_table(tables.normalize(records))
    assert list(exp["attack"]) == ["badnets", "blended", "wanet", "none"]
    assert set(exp["exposure"]) == {"CUL"}
    assert exp.iloc[0]["exposed_label"] == "0"
    assert exp.iloc[0]["exposed_ca"] == pytest.approx(90.0)


def test_two_labelled_settings_of_one_exposure_stay_apart() -> None:
    """Records of `{name: cul, label: ...}` entries are shown and grouped under their labels, not
    merged like seeds of one method; records without ``exposure_label`` keep the method name."""
    rows = [_row("badnets", None, "none", 0.91, 0.99),
            _row("badnets", "cul", "rp", 0.90, 0.02, exposure_label="cul", exposed_ca=0.10),
            _row("badnets", "cul", "rp", 0.70, 0.90, exposure_label="cul-2ep", exposed_ca=0.45,
                 cell_key="badnets-rp-2ep")]
    df = tables.normalize(pd.DataFrame(rows))
    agg = tables.aggregate(df).set_index("method")
    assert agg.loc["CUL+RP", "n"] == 1 and agg.loc["CUL-2EP+RP", "asr"] == pytest.approx(90.0)
    exp = tables.exposure_table(df).set_index("exposure")
    assert exp.loc["CUL-2EP", "exposed_ca"] == pytest.approx(45.0)
    assert exp.loc["CUL", "exposed_ca"] == pytest.approx(10.0)


def test_context_formatting(records: pd.DataFrame) -> None:
    (section,) = build_context(records)["sections"]
    assert section["notes"] == ["JPEG-re-encoded CIFAR-10"]
    assert section["rows"][2]["cells"][1] is None  # wanet x CUL+RP
    assert section["delta"][0] is None and section["delta"][1]["ca"] == pytest.approx(91 - 92.5575)


def test_markdown_leaderboard_has_the_matrix_and_escapes_cells(records: pd.DataFrame, tmp_path: Path) -> None:
    records["model_note"] = "a | b <i>"
    text = render_leaderboard(records, tmp_path / "out", figures=False)["md"].read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line.startswith("| attack |"))
    rows = [line for line in text.splitlines() if line.startswith("| badnets |")]
    assert "No defense CA / ASR" in header and "CUL+RP CA / ASR" in header
    assert rows and rows[0].count(" | ") == header.count(" | ")  # one cell per method column
    assert "| **average** |" in text and "Δ vs. No defense" in text
    assert "> Note: a \\| b <i>" in text  # pipes escaped, no HTML escaping in Markdown


def test_render_html_is_self_contained(records: pd.DataFrame, tmp_path: Path) -> None:
    records["model_note"] = "<b>" + NASTY
    paths = render_leaderboard(records, tmp_path / "out")
    assert set(paths) == {"html", "tex", "md"} and all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["leaderboard.html", "leaderboard.md",
                                                                     "leaderboard.tex"]
    html = paths["html"].read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I) and "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    for text in ("91.23", "89.00", "CUL+RP", "No defense", "Average", "JPEG-re-encoded CIFAR-10",
                 "deadbee", "0.1.0", "H100", "badnets-rp-1"):
        assert text in html
    assert "&lt;b&gt;" in html and "<b>50%" not in html  # notes are HTML-escaped
    assert "-90.50" in html  # delta ASR: 6.50 - 97.00


def test_render_tex_escapes_specials(records: pd.DataFrame, tmp_path: Path) -> None:
    records["dataset_note"] = NASTY
    records["dataset"] = "cifar_10"
    tex = render_leaderboard(records, tmp_path)["tex"].read_text(encoding="utf-8")
    expected = (r"50\% JPEG \& q\_75 \#1 \$x\$ \{a\} \textasciitilde{}b \textasciicircum{}c "
                r"\textbackslash{}d \textless{}e\textgreater{}")
    assert expected in tex and NASTY not in tex
    assert r"cifar\_10" in tex and "cifar_10" not in tex
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\usepackage{booktabs}", "91.23", "Average"):
        assert cmd in tex
    assert tex_escape("a\\b{c}") == r"a\textbackslash{}b\{c\}"
    assert tex_escape("ε=1 Δ") == r"$\epsilon$=1 $\Delta$"


def test_missing_optional_columns_and_empty(tmp_path: Path) -> None:
    minimal = pd.DataFrame([dict(dataset="d", model="m", attack="a", defense="none", ca=0.5)])
    html = render_leaderboard(minimal, tmp_path / "min")["html"].read_text(encoding="utf-8")
    assert "50.00" in html
    empty = pd.DataFrame(columns=list(tables.REQUIRED_COLUMNS))
    assert "No results." in render_leaderboard(empty, tmp_path / "empty")["html"].read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="required columns"):
        render_leaderboard(minimal.drop(columns="ca"), tmp_path / "bad")


def test_tex_compiles(records: pd.DataFrame, tmp_path: Path) -> None:
    if shutil.which("pdflatex") is None:
        if os.environ.get("EBYD_REQUIRE_PDFLATEX") == "1":
            pytest.fail("pdflatex not on PATH but EBYD_REQUIRE_PDFLATEX=1")
        pytest.skip("pdflatex not on PATH (apt: texlive-latex-base texlive-latex-recommended)")
    records["dataset_note"] = NASTY + " ε=8/255, λ=0.1, Δ ± é"  # Greek needs math mode under pdflatex
    tex = render_leaderboard(records, tmp_path)["tex"]
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "leaderboard.pdf").stat().st_size > 0
