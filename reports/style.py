"""One figure style for every plot (paper-column sized, colour-blind-safe, EBYD highlighted).

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so
no global backend or figure registry is touched; the rc settings apply only inside
:func:`context`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Iterator

import matplotlib
from matplotlib.figure import Figure

from ebyd_bench.benchmark.io import atomic_write

from .tables import is_ebyd

#: Okabe–Ito palette (distinguishable with the common colour-vision deficiencies)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999")
HIGHLIGHT = "#D55E00"  # EBYD (any "+RP" method) is always drawn in this colour
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
COLUMN_WIDTH = 3.5  # inches: one column of a two-column paper
FORMATS = ("png", "pdf")


def rc() -> dict:
    """The rc parameters of every figure (a fresh dict, so nobody mutates shared state)."""
    return {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
            "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
            "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 1.4, "lines.markersize": 4,
            "savefig.dpi": 200, "savefig.bbox": "tight", "pdf.fonttype": 42, "font.family": "DejaVu Sans"}


@contextlib.contextmanager
def context() -> Iterator[None]:
    """Apply the style for the figures created and saved inside the block."""
    with matplotlib.rc_context(rc()):
        yield


def colors(methods: list[str]) -> dict[str, str]:
    """A stable colour per method: EBYD in the highlight colour, the others cycling the palette."""
    others = [m for m in methods if not is_ebyd(m)]
    out = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(others)}
    out.update({m: HIGHLIGHT for m in methods if is_ebyd(m)})
    return out


def figure(n_panels: int, ncols: int = 3, panel: tuple[float, float] = (2.3, 1.9)) -> tuple[Figure, list]:
    """A figure with `n_panels` axes in a grid of at most `ncols` columns (extra axes hidden)."""
    ncols = max(1, min(ncols, n_panels))
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write `stem`.png and `stem`.pdf atomically into `out_dir`."""
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt))
        paths.append(path)
    return paths


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (for embedding in the self-contained HTML page)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
