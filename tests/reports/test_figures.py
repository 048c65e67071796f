"""Figures: exposure curves, detection bars and the ASR-vs-CA scatter as PNG + PDF; the image-grid hook."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebyd_bench.cli import main
from ebyd_bench.reports import figures, style, tables

PNG, PDF = b"\x89PNG\r\n\x1a\n", b"%PDF"


def _trace(n: int, seed: int) -> list[dict]:
    """An exposure trajectory: CA falls, ASR stays high."""
    return [{"step": i + 1, "dd_acc": 0.9 - 0.2 * i, "test_ca": 0.9 - 0.2 * i - 0.01 * seed, "test_asr": 1.0}
            for i in range(n)]


@pytest.fixture()
def records() -> pd.DataFrame:
    rows = []
    for attack in ("badnets", "blend"):
        for seed in (0, 1):
            common = dict(dataset="cifar10", model="resnet18", attack=attack, seed=seed, target=0, ca_before=0.92,
                          asr_before=1.0)
            for exposure, n in (("cul", 4), ("cfft", 3)):
                rows.append({**common, "exposure": exposure, "defense": "rp", "ca": 0.9, "asr": 0.03,
                             "exposure_trace": _trace(n, seed), "exposed_label": 0, "bem": 0.8})
            rows.append({**common, "exposure": None, "defense": "none", "ca": 0.92, "asr": 1.0})
            rows.append({**common, "exposure": "cul", "defense": "strip", "ca": math.nan, "asr": None,
                         "defense_info": {"strip_auroc": 0.9}})
    return pd.DataFrame(rows)


def test_render_figures_png_and_pdf(records: pd.DataFrame, tmp_path: Path) -> None:
    paths = figures.render_figures(records, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"{kind}-cifar10-resnet18.{ext}" for kind in ("exposure-curves", "detection-rates", "asr-vs-ca")
        for ext in ("png", "pdf"))
    for p in paths:
        assert p.read_bytes().startswith(PNG if p.suffix == ".png" else PDF)


def test_threshold_sweep_figure_marks_the_chosen_threshold(records: pd.DataFrame) -> None:
    sweep = [{"t": t, "pruned": int(100 * t), "test_ca": 0.9 - 0.3 * t, "test_asr": max(0.0, 1.0 - 2 * t)}
             for t in (0.05, 0.1, 0.2, 0.4)]
    records = records.copy()
    rp = records["defense"] == "rp"
    records.loc[rp, "defense_info"] = pd.Series([{"rp_threshold": 0.2, "diagnostic_sweep": sweep}] * int(rp.sum()),
                                                index=records.index[rp])
    with style.context():
        fig = figures.threshold_sweeps(tables.normalize(records))
    ax = fig.axes[0]
    assert ax.get_title() == "badnets"
    marks = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert marks and all(list(m.get_xdata()) == [0.2] for m in marks)
    assert all(list(m.get_ydata()) == [pytest.approx(60.0)] for m in marks)
    assert figures.threshold_sweeps(tables.normalize(records.assign(defense_info=None))) is None


def test_exposure_curves_panels_and_lines(records: pd.DataFrame) -> None:
    df = tables.normalize(records)
    traces = figures._traces(df)
    assert set(traces["step"]) == {0, 1, 2, 3, 4}  # step 0 = the undefended model
    assert traces[(traces["step"] == 0)]["ca"].tolist() == [92.0] * 8  # 2 attacks × 2 exposures × 2 seeds
    with style.context():
        fig = figures.exposure_curves(df)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["badnets", "blend"]
    assert len(axes[0].lines) == 4  # CA and ASR per exposure
    ca_cul = next(line for line in axes[0].lines if line.get_label() == "CUL CA")
    assert ca_cul.get_ydata()[1] == pytest.approx(89.5)  # mean of the two seeds at step 1


def test_scatter_highlights_ebyd(records: pd.DataFrame) -> None:
    df = tables.normalize(records)
    with style.context():
        fig = figures.asr_ca_scatter(df, tables.aggregate(df))
    (ax,) = fig.axes
    labels = [c.get_label() for c in ax.collections]
    assert labels == ["No defense", "CFFT+RP", "CUL+RP"]  # the detector has no CA: no marker
    sizes = {c.get_label(): c.get_sizes()[0] for c in ax.collections}
    assert sizes["CUL+RP"] > sizes["No defense"]


def test_figures_skipped_without_data(tmp_path: Path) -> None:
    plain = pd.DataFrame([dict(dataset="d", model="m", attack="a", defense="none", ca=0.5, asr=0.9)])
    names = [p.name for p in figures.render_figures(plain, tmp_path)]
    assert names == ["asr-vs-ca-d-m.png", "asr-vs-ca-d-m.pdf"]


def test_image_grid_hook(tmp_path: Path) -> None:
    images = [np.full((8, 8, 3), 40 * i, dtype=np.uint8) for i in range(5)] + [np.random.default_rng(0).random((8, 8))]
    fig = figures.image_grid(images, titles=[f"t{i}" for i in range(6)], ncols=4, suptitle="triggers")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6 and visible[5].get_title() == "t5"
    paths = style.save(fig, tmp_path, "gallery")
    assert [p.name for p in paths] == ["gallery.png", "gallery.pdf"]


def _stored(i: int, row: dict) -> dict:
    """A fixture row as a whole stored record: the fields figures do not read get placeholder values."""
    filler = dict(domain="image", cell_key=f"cell{i}", cache_key=f"model{row['attack']}{row['seed']}",
                  config_name="figures", config_hash="h", label="", dataset_note="", model_note="",
                  model_params={}, recipe="quick", eval_test_size=100, attack_params={}, poison_rate=0.1,
                  defense_label=row["defense"], defense_params={}, defense_category="removal",
                  defense_uses_exposure=True, defense_info={}, train_cached=False, timings={}, hardware={},
                  provenance={})
    return {**filler, **{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}}


def test_cli_figures(records: pd.DataFrame, tmp_path: Path, capsys) -> None:
    import json

    store = tmp_path / "store"
    store.mkdir()
    rows = records.to_dict("records")
    (store / "results.jsonl").write_text("".join(json.dumps(_stored(i, r)) + "\n" for i, r in enumerate(rows)))
    assert main(["figures", str(store), "--out", str(tmp_path / "figs")]) == 0
    assert len(capsys.readouterr().out.split()) == 6 and len(list((tmp_path / "figs").iterdir())) == 6
