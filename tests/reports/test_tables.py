"""Paper tables (LaTeX, booktabs): which tables exist for which data, bold marks, averages, and pdflatex.

Compilation needs pdflatex (apt: texlive-latex-base texlive-latex-recommended); the compile tests
skip without it unless EBYD_REQUIRE_PDFLATEX=1 (then they fail), as in tests/reports/test_reports.py.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from ebyd_bench.cli import main
from ebyd_bench.reports.latex import render_tables

NASTY = r"50% JPEG & q_75 #1 $x$ {a} ~b ^c \d <e> ε=8/255"
DOMAIN = {"cifar10": "image", "sst2": "text"}  # what the runner records as each fixture dataset's domain


def _rec(dataset: str, attack: str, exposure: str | None, defense: str, ca: float, asr: float | None,
         seed: int = 0, **extra) -> dict:
    rec = dict(dataset=dataset, domain=DOMAIN.get(dataset), model="resnet18", attack=attack, exposure=exposure,
               defense=defense, seed=seed, ca=ca, asr=asr, ca_before=0.92, asr_before=1.0, target=0,
               defense_info={}, dataset_note=NASTY, model_note="")
    rec.update(extra)
    return rec


@pytest.fixture()
def records() -> pd.DataFrame:
    exposed = dict(exposed_ca=0.1, exposed_asr=1.0)
    rows = []
    for attack, rp_asr in (("badnets", 0.02), ("blend", 0.04), ("wa_net", 0.01)):
        rows += [
            _rec("cifar10", attack, None, "none", 0.92, 1.0),
            _rec("cifar10", attack, "cul", "rp", 0.91, rp_asr, exposed_label=0, bem=0.9, **exposed),
            _rec("cifar10", attack, "cfft", "rp", 0.89, 0.05, exposed_label=1, bem=0.7, **exposed),
            _rec("cifar10", attack, "cul", "recovery", 0.90, 0.30),
            _rec("cifar10", attack, None, "strip", math.nan, None, defense_info={"strip_auroc": 0.55}),
            _rec("cifar10", attack, "cul", "strip", math.nan, None,
                 defense_info={"strip_auroc": 0.9, "nc_mask_l1": 12.5}),
        ]
    rows.append(_rec("cifar10", "none", None, "none", 0.93, None))
    for attack in ("addsent", "syntactic"):
        rows += [_rec("sst2", attack, None, "none", 0.91, 1.0), _rec("sst2", attack, None, "onion", 0.88, 0.40),
                 _rec("sst2", attack, "cul", "rp", 0.90, 0.20)]
    return pd.DataFrame(rows)


def _read(paths: list[Path]) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in paths}


def test_tables_for_present_data(records: pd.DataFrame, tmp_path: Path) -> None:
    files = _read(render_tables(records, tmp_path))
    assert set(files) == {
        "table3-bem-cifar10-resnet18.tex", "table4-auroc-cifar10-resnet18.tex", "table5-recovery-cifar10-resnet18.tex",
        "table6-summary-cifar10-resnet18.tex", "table10-removal-cifar10-resnet18.tex",
        "table7-text-sst2-resnet18.tex", "tables.tex"}  # sst2 has removal only: no four-task summary
    doc = files["tables.tex"]
    assert all(rf"\input{{{name}}}" in doc for name in files if name != "tables.tex")
    assert r"\usepackage{booktabs}" in doc and r"\begin{document}" in doc


def test_the_record_domain_not_the_dataset_name_picks_the_text_table(tmp_path: Path) -> None:
    """Table VII (CACC) for text records whatever the dataset is called; an image grid named like a
    text corpus keeps Table X."""
    rows = [_rec("reviews", "addsent", None, "none", 0.91, 1.0, domain="text"),
            _rec("reviews", "addsent", None, "onion", 0.88, 0.40, domain="text"),
            _rec("sst2", "badnets", None, "none", 0.92, 1.0, domain="image"),
            _rec("sst2", "badnets", None, "ft", 0.90, 0.10, domain="image")]
    names = {p.name for p in render_tables(pd.DataFrame(rows), tmp_path)}
    assert {"table7-text-reviews-resnet18.tex", "table10-removal-sst2-resnet18.tex"} <= names
    assert not any(n.startswith(("table7-text-sst2", "table10-removal-reviews")) for n in names)


def test_removal_table_bold_averages_and_deviation(records: pd.DataFrame, tmp_path: Path) -> None:
    tex = _read(render_tables(records, tmp_path))["table10-removal-cifar10-resnet18.tex"]
    label = r"\label{tab:table10-removal-cifar10-resnet18}"
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-3}", label):
        assert cmd in tex
    lines = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line}
    # columns: No defense, CFFT+RP, CUL+RECOVERY, CUL+RP (CA, ASR each); no-defense is never bold
    assert lines["badnets"] == (r"badnets & 92.00 & 100.00 & 89.00 & 5.00 & 90.00 & 30.00 & \textbf{91.00} & "
                                r"\textbf{2.00} \\")
    assert lines[r"wa\_net"].endswith(r"\textbf{91.00} & \textbf{1.00} \\")
    assert lines["none"].startswith(r"none & 93.00 & -- &")  # the clean control has no ASR
    assert lines["Average"].startswith("Average & 92.25 & 100.00 &")  # CA over all rows, ASR over attacks only
    assert r"\textbf{2.33}" in lines["Average"]  # CUL+RP mean ASR (2 + 4 + 1) / 3
    assert lines[r"$\Delta$ vs.\ No defense"].endswith(r"$-1.25$ & $-97.67$ \\")  # 91 - 92.25, 2.33 - 100


def test_exposure_detection_summary_and_text_tables(records: pd.DataFrame, tmp_path: Path) -> None:
    files = _read(render_tables(records, tmp_path))
    bem = files["table3-bem-cifar10-resnet18.tex"]
    assert "Attack & CFFT & CUL" in bem and r"badnets & 0.70 & \textbf{0.90} \\" in bem
    auroc = files["table4-auroc-cifar10-resnet18.tex"]
    assert r"badnets & \textbf{90.00} & 55.00 \\" in auroc and r"Gain over unexposed & $+35.00$ & -- \\" in auroc
    summary = files["table6-summary-cifar10-resnet18.tex"]
    for group in ("Label detection", "Sample detection", "Trigger", "Removal (CUL+RP)", "Removal (CFFT+RP)"):
        assert group in summary
    assert "CUL+STRIP (nc\\_mask\\_l1)" not in summary and "12.50" in summary
    recovery = files["table5-recovery-cifar10-resnet18.tex"]
    header = r"Attack & \multicolumn{2}{c}{CFFT+RP} & \multicolumn{2}{c}{CUL+RECOVERY} & \multicolumn{2}{c}{CUL+RP} \\"
    assert header in recovery
    text = files["table7-text-sst2-resnet18.tex"]
    assert "CACC & ASR" in text
    assert r"addsent & 91.00 & 100.00 & \textbf{90.00} & \textbf{20.00} & 88.00 & 40.00 \\" in text
    assert r"50\% JPEG \& q\_75" in text and NASTY not in text


def test_no_data_no_tables(tmp_path: Path) -> None:
    minimal = pd.DataFrame([dict(dataset="d", model="m", attack="a", defense="none", ca=0.5)])
    files = _read(render_tables(minimal, tmp_path))
    assert set(files) == {"table10-removal-d-m.tex", "tables.tex"}


def _pdflatex(tex: Path) -> None:
    """Compile `tex` in its folder (skip without pdflatex unless EBYD_REQUIRE_PDFLATEX=1)."""
    if shutil.which("pdflatex") is None:
        if os.environ.get("EBYD_REQUIRE_PDFLATEX") == "1":
            pytest.fail("pdflatex not on PATH but EBYD_REQUIRE_PDFLATEX=1")
        pytest.skip("pdflatex not on PATH (apt: texlive-latex-base texlive-latex-recommended)")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                          cwd=tex.parent, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert tex.with_suffix(".pdf").stat().st_size > 0


def test_synthetic_tables_compile(records: pd.DataFrame, tmp_path: Path) -> None:
    _pdflatex(render_tables(records, tmp_path)[-1])


@pytest.mark.e2e
def test_real_grid_tables_compile(tiny_grid: Path, tmp_path: Path, capsys) -> None:
    assert main(["tables", str(tiny_grid), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[-1].endswith("tables.tex") and any("table10-removal" in p for p in printed)
    _pdflatex(tmp_path / "tables.tex")


def test_tooltip_shows_the_prior_matched_asr_of_text_cells() -> None:
    from ebyd_bench.reports import tables

    df = pd.DataFrame([_rec("sst2", "sos", "cul", "rp", 0.80, 0.06, asr_prior_matched=0.914, cell_key="c1"),
                       _rec("cifar10", "badnets", "cul", "rp", 0.90, 0.02, cell_key="c2")])
    tips = tables.aggregate(tables.normalize(df)).set_index("attack")["tip"]
    assert "ASR at the matched prior 91.4%" in tips["sos"]
    assert "matched prior" not in tips["badnets"]


def test_input_filters_that_rewrite_inputs_join_the_removal_matrix() -> None:
    """ONION hands back a filtering pipeline whose CA/ASR the harness measured: a Table VII column.
    STRIP only scores inputs (the undefended CA/ASR are copied): detection tables only. Records
    from before ``defense_returns_model`` existed fall back to the category."""
    from ebyd_bench.reports.tables import normalize, removal_rows

    recs = pd.DataFrame([
        _rec("sst2", "badnet_rw", None, "none", 0.90, 1.0, defense_category="none", defense_returns_model=True),
        _rec("sst2", "badnet_rw", None, "onion", 0.79, 0.24, defense_category="input_filtering",
             defense_returns_model=True),
        _rec("sst2", "badnet_rw", None, "strip", 0.90, 1.0, defense_category="input_filtering",
             defense_returns_model=False),
        # legacy records: detectors copied the undefended CA/ASR (0.92 / 1.0) exactly
        _rec("sst2", "badnet_sl", None, "nc", 0.92, 1.0, defense_category="model_inspection"),
        _rec("sst2", "badnet_sl", None, "ft", 0.92, 1.0, defense_category="removal"),
        _rec("sst2", "badnet_sl", None, "onion", 0.80, 0.3, defense_category="input_filtering"),
    ])
    kept = removal_rows(normalize(recs))
    assert sorted(zip(kept["attack"], kept["defense"])) == [
        ("badnet_rw", "none"), ("badnet_rw", "onion"), ("badnet_sl", "ft"), ("badnet_sl", "onion")]


def test_the_no_defense_cell_of_each_exposure_counts_once() -> None:
    """A grid with exposures [none, cul] records the undefended model twice; it is one experiment."""
    from ebyd_bench.reports.tables import aggregate, normalize

    recs = pd.DataFrame([
        _rec("cifar10", "badnets", None, "none", 0.9, 1.0, cache_key="m" * 64),
        _rec("cifar10", "badnets", "cul", "none", 0.9, 1.0, cache_key="m" * 64),
        _rec("cifar10", "badnets", None, "none", 0.8, 0.9, seed=1, cache_key="n" * 64),
    ])
    row = aggregate(normalize(recs)).iloc[0]
    assert row["n"] == 2 and row["ca"] == pytest.approx(85.0) and row["ca_std"] == pytest.approx(7.0710678)
