"""Paper figures from result records: exposure curves, detection-rate bars, ASR-vs-CA scatter.

Every figure is written as PNG and PDF (``style.save``) and embedded as PNG in the leaderboard
page. :func:`image_grid` is the shared hook for image figures (trigger galleries, recovered
triggers): give it arrays, get a styled figure back.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import style, tables
from .detection import TASKS, detection_matrix, detection_rows
from .render import slug

#: builds one figure from a (dataset, model) slice: (normalized records, `tables.removal_aggregate`) -> figure or None
Builder = Callable[[pd.DataFrame, pd.DataFrame], Figure | None]


def _traces(df: pd.DataFrame) -> pd.DataFrame:
    """Long frame (attack, exposure, seed, step, ca, asr) in % from each exposure's trace, once per exposure.

    Step 0 is the undefended model (``ca_before``/``asr_before``, evaluated on the full test subset),
    prepended so every curve starts where the exposure started.
    """
    rows = []
    exposed = df[df["exposure_trace"].map(lambda t: isinstance(t, list) and len(t) > 0)]
    for r in exposed.drop_duplicates(subset=["attack", "exposure", "seed"]).itertuples(index=False):
        base = {"attack": r.attack, "exposure": str(r.exposure).upper(), "seed": r.seed}
        if r.exposure_trace[0].get("step", 0) > 0 and not np.isnan(r.ca_before):
            rows.append({**base, "step": 0, "ca": r.ca_before, "asr": r.asr_before})
        rows += [{**base, "step": t.get("step"), "ca": t.get("test_ca"), "asr": t.get("test_asr")}
                 for t in r.exposure_trace]
    out = pd.DataFrame(rows, columns=["attack", "exposure", "seed", "step", "ca", "asr"])
    out[["ca", "asr"]] = out[["ca", "asr"]].apply(pd.to_numeric, errors="coerce") * 100.0
    return out


def exposure_curves(df: pd.DataFrame, agg: pd.DataFrame | None = None) -> Figure | None:
    """CA (solid) and ASR (dashed) against exposure step: one panel per attack, one colour per exposure."""
    traces = _traces(df)
    if traces.empty:
        return None
    attacks = tables.attack_order(traces["attack"])
    exposures = sorted(traces["exposure"].unique())
    colors = dict(zip(exposures, style.PALETTE))
    fig, axes = style.figure(len(attacks))
    for ax, attack in zip(axes, attacks):
        mean = traces[traces["attack"] == attack].groupby(["exposure", "step"])[["ca", "asr"]].mean().reset_index()
        for exp in exposures:
            part = mean[mean["exposure"] == exp]
            ax.plot(part["step"], part["ca"], "-o", color=colors[exp], label=f"{exp} CA")
            ax.plot(part["step"], part["asr"], "--s", color=colors[exp], label=f"{exp} ASR")
        ax.set(title=attack, xlabel="exposure step", ylabel="%", ylim=(-3, 103))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(loc="best", frameon=False)
    return fig


def detection_bars(df: pd.DataFrame, agg: pd.DataFrame | None = None) -> Figure | None:
    """Grouped bars of each detection measure per attack (plus the average), one panel per task."""
    matrix = detection_matrix(detection_rows(df))
    if matrix.empty:
        return None
    tasks = list(dict.fromkeys(matrix.columns.get_level_values("task")))
    fig, axes = style.figure(len(tasks), ncols=2, panel=(3.4, 2.2))
    for ax, task in zip(axes, tasks):
        part = matrix[task]
        part = pd.concat([part, part.mean().to_frame("average").T])
        series = [f"{m} ({meas})" if meas not in ("exposed_label",) else m for m, meas in part.columns]
        color = style.colors(series)
        width = 0.8 / len(series)
        x = np.arange(len(part.index))
        for i, (name, col) in enumerate(zip(series, part.columns)):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, part[col].to_numpy(), width, label=name, color=color[name])
        ax.set_xticks(x, part.index, rotation=30, ha="right")
        ax.set(title=TASKS[task], ylabel="%", ylim=(0, 105))
        ax.legend(loc="lower right", frameon=False)
    return fig


def asr_ca_scatter(df: pd.DataFrame, agg: pd.DataFrame) -> Figure | None:
    """ASR against CA of every (attack, defense) cell: one marker per defense, EBYD highlighted."""
    cells = agg.dropna(subset=["ca", "asr"])
    if cells.empty:
        return None
    methods = tables.method_order(cells["method"])
    color = style.colors(methods)
    fig, (ax,) = style.figure(1, panel=(3.6, 2.8))
    for i, method in enumerate(methods):
        part = cells[cells["method"] == method]
        ebyd = tables.is_ebyd(method)
        ax.scatter(part["ca"], part["asr"], label=method, color=color[method],
                   marker=style.MARKERS[i % len(style.MARKERS)], s=60 if ebyd else 28,
                   edgecolors="black" if ebyd else "none", zorder=3 if ebyd else 2)
    ax.set(xlabel="CA (%)", ylabel="ASR (%)", title="defenses: ASR vs CA (lower right is better)",
           xlim=(-3, 103), ylim=(-3, 103))
    ax.legend(loc="best", frameon=False)
    return fig


def threshold_sweeps(df: pd.DataFrame, agg: pd.DataFrame | None = None) -> Figure | None:
    """Test CA (solid) and ASR (dashed) of a pruning defense at every fixed threshold, from the
    harness's ``diagnostic_sweep``; the threshold the method chose from ``D_d`` is marked (×).

    Diagnostics only (docs/methods.md §7.1-6): the method never saw these numbers.
    """
    rows = []
    for r in df.itertuples(index=False):
        info = getattr(r, "defense_info", None)
        sweep = info.get("diagnostic_sweep") if isinstance(info, dict) else None
        if not isinstance(sweep, list):
            continue
        chosen = next((v for k, v in info.items() if k.endswith("_threshold")), None)
        rows += [{"attack": r.attack, "method": r.method, "t": s["t"], "chosen": chosen, "before": 100.0 * r.ca_before,
                  "ca": 100.0 * s["test_ca"], "asr": None if s.get("test_asr") is None else 100.0 * s["test_asr"]}
                 for s in sweep]
    if not rows:
        return None
    sweeps = pd.DataFrame(rows)
    attacks = tables.attack_order(sweeps["attack"])
    methods = tables.method_order(sweeps["method"])
    color = style.colors(methods)
    fig, axes = style.figure(len(attacks))
    for ax, attack in zip(axes, attacks):
        ax.axhline(sweeps.loc[sweeps["attack"] == attack, "before"].mean(), color="grey", linestyle=":",
                   label="CA before defense")
        for method in methods:
            cells = sweeps[(sweeps["attack"] == attack) & (sweeps["method"] == method)]
            if cells.empty:
                continue
            part = cells.groupby("t")[["ca", "asr"]].mean().reset_index()  # mean over seeds
            ax.plot(part["t"], part["ca"], "-", color=color[method], label=f"{method} CA")
            ax.plot(part["t"], part["asr"], "--", color=color[method], label=f"{method} ASR")
            picked = part[part["t"].isin(pd.to_numeric(cells["chosen"], errors="coerce").dropna().unique())]
            ax.plot(picked["t"], picked["asr"], "x", color=color[method], markersize=8)
        ax.set(title=attack, xlabel="pruning threshold t", ylabel="% (test)", ylim=(-3, 103))
    axes[0].legend(loc="best", frameon=False)
    return fig


#: figure kind -> (title shown on the page, builder); read-only
def recovered_triggers(df: pd.DataFrame, agg: pd.DataFrame | None = None, limit: int = 12) -> Figure | None:
    """Images a defense saved (NC's recovered mask and pattern, paper Fig. 7), one row per cell.

    Paths in ``defense_info["images"]`` are relative to the folder of the record's results file.
    """
    from PIL import Image

    images, titles = [], []
    for rec in df.itertuples(index=False):
        info = getattr(rec, "defense_info", None)
        source = getattr(rec, "source", None)
        if not isinstance(info, dict) or not isinstance(info.get("images"), dict) or not isinstance(source, str):
            continue
        base = Path(source).parent
        for name, rel in sorted(info["images"].items()):
            path = base / rel
            if path.is_file() and len(images) < 2 * limit:
                with Image.open(path) as img:
                    images.append(np.asarray(img))
                titles.append(f"{rec.attack} {rec.method}\n{name}")
    if not images:
        return None
    return image_grid(images, titles, ncols=4)


FIGURES: Mapping[str, tuple[str, Builder]] = MappingProxyType({
    "exposure-curves": ("Exposure curves: CA and ASR along the exposure", exposure_curves),
    "detection-rates": ("Detection rates", detection_bars),
    "asr-vs-ca": ("ASR vs CA of every defense", asr_ca_scatter),
    "recovered-triggers": ("Recovered triggers (masks and patterns saved by inspection defenses)",
                           recovered_triggers),
    "threshold-sweeps": ("Pruning-threshold sweeps: test CA/ASR at every fixed threshold (diagnostics only; "
                         "× marks the threshold chosen from D_d)", threshold_sweeps),
})


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int = 5,
               suptitle: str | None = None) -> Figure:
    """Styled grid of images (HWC or HW; uint8, or floats in [0, 1]) with optional titles.

    The hook for trigger galleries and recovered-trigger figures; save it with ``style.save``.
    """
    with style.context():
        fig, axes = style.figure(len(images), ncols=ncols, panel=(1.3, 1.4))
        for i, (ax, img) in enumerate(zip(axes, images)):
            arr = np.asarray(img)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, interpolation="nearest",
                      vmin=0, vmax=255 if arr.dtype == np.uint8 else 1)
            ax.set_axis_off()
            if titles is not None:
                ax.set_title(titles[i])
        if suptitle:
            fig.suptitle(suptitle)
    return fig


def section_figures(df: pd.DataFrame, agg: pd.DataFrame) -> dict[str, Figure]:
    """Every figure that has data for one (dataset, model) slice, keyed by kind."""
    built = {kind: builder(df, agg) for kind, (_, builder) in FIGURES.items()}
    return {kind: fig for kind, fig in built.items() if fig is not None}


def embedded(df: pd.DataFrame, agg: pd.DataFrame) -> list[dict[str, Any]]:
    """[{kind, title, src}] with PNG data URIs for the self-contained page."""
    with style.context():
        return [{"kind": kind, "title": FIGURES[kind][0],
                 "src": "data:image/png;base64," + base64.b64encode(style.png_bytes(fig)).decode("ascii")}
                for kind, fig in section_figures(df, agg).items()]


def render_figures(records: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write every figure of every (dataset, model) slice as PNG and PDF; returns the paths."""
    df = tables.normalize(records)
    out = Path(out_dir)
    paths: list[Path] = []
    with style.context():
        for dataset, model, part in tables.slices(df):
            for kind, fig in section_figures(part, tables.removal_aggregate(part)).items():
                paths += style.save(fig, out, slug(kind, dataset, model))
    return paths
