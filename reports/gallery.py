"""Trigger gallery: clean images and their triggered versions for every image attack (paper Fig. 6).

One figure, written as PNG and PDF: the first row holds clean test images, then one row per
attack with the same images triggered and, last, the amplified difference |x' − x| of the first
image. Attacks that train parts (adv, dynamic) get their :class:`AttackContext` from
``ctx_factory(attack, seed)``; an attack that cannot be set up (no context, no trigger file, a
missing package) is drawn as a placeholder whose title gives the reason — never a stand-in trigger.
Adv is shown as its training poison (PGD + grid); its test trigger is the plain grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib.figure import Figure

from ebyd_bench.attacks_registry.base import AttackContext, ImageAttack
from ebyd_bench.benchmark.specs import MethodSpec, build_method
from ebyd_bench.benchmark.registries import ATTACKS

CtxFactory = Callable[[ImageAttack, int], "AttackContext | None"]
#: rows in the order of the paper's Table VIII; attacks not listed follow alphabetically
PAPER_ORDER = ("onepixel", "badnets", "trojan", "blend", "sig", "adv", "smooth", "nash", "dynamic", "wanet")


@dataclass
class GalleryRow:
    """One attack's row: triggered images, or ``None`` with the reason it is a placeholder."""

    name: str
    images: np.ndarray | None
    note: str = ""


def clean_examples(dataset: Any, n_images: int = 6, target: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first test image of each of the first ``n_images`` non-target classes (deterministic)."""
    split = getattr(dataset, "test", dataset)
    labels = np.asarray(split.labels)
    classes = [c for c in np.unique(labels) if c != target][:n_images]
    idx = np.array([int(np.flatnonzero(labels == c)[0]) for c in classes])
    return np.asarray(split.images)[idx], labels[idx]


def gallery_rows(images: np.ndarray, labels: np.ndarray, attacks: Sequence[str | dict] | None = None,
                 seed: int = 0, ctx_factory: CtxFactory | None = None) -> list[GalleryRow]:
    """Set up each attack (``ctx_factory`` for those that train parts) and trigger ``images``."""
    if attacks is None:
        image = [n for n in ATTACKS.names() if getattr(ATTACKS.get(n), "domain", "image") == "image"]
        attacks = sorted(image, key=lambda n: (PAPER_ORDER.index(n) if n in PAPER_ORDER else 99, n))
    specs = [MethodSpec.parse(a) for a in attacks]
    rows = []
    for spec in specs:
        attack = build_method(ATTACKS, spec, "gallery attack")
        if attack.is_clean:
            continue
        rows.append(_row(attack, images, labels, seed, ctx_factory))
    return rows


def _row(attack: ImageAttack, images: np.ndarray, labels: np.ndarray, seed: int,
         ctx_factory: CtxFactory | None) -> GalleryRow:
    needs = getattr(attack, "needs", None)
    ctx = ctx_factory(attack, seed) if ctx_factory is not None and needs == "training" else None
    try:
        attack.setup(seed, ctx)
    except (ValueError, ImportError, FileNotFoundError) as exc:
        kind = {"training": "needs training", "file": "needs trigger file"}.get(needs or "", "unavailable")
        return GalleryRow(attack.name, None, f"{kind}: {exc}")
    train_trigger = getattr(attack, "train_trigger", None)
    if train_trigger is not None:
        return GalleryRow(attack.name, train_trigger(images, labels, seed), "training poison")
    return GalleryRow(attack.name, attack.apply(images))


def gallery_figure(clean: np.ndarray, rows: list[GalleryRow], amplify: float | None = 5.0) -> Figure:
    """Rows of images with the attack name on the left; placeholders span the row."""
    from textwrap import fill

    n_cols = len(clean) + (1 if amplify else 0)
    fig = Figure(figsize=(0.95 * n_cols + 0.9, 1.0 * (len(rows) + 1)), layout="constrained")
    grid = fig.add_gridspec(len(rows) + 1, n_cols)
    for r, row in enumerate([GalleryRow("clean", clean)] + rows):
        if row.images is None:
            ax = fig.add_subplot(grid[r, :])
            ax.text(0.5, 0.5, fill(row.note, 110), ha="center", va="center", fontsize=6, wrap=True)
            _frame(ax, row.name, dashed=True)
            ax.set_title("placeholder — " + row.note.split(":")[0], fontsize=7)
            continue
        for c in range(len(clean)):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(row.images[c], interpolation="nearest")
            _frame(ax, (f"{row.name}\n({row.note})" if row.note else row.name) if c == 0 else None)
        if amplify:
            ax = fig.add_subplot(grid[r, n_cols - 1])
            diff = np.abs(row.images[0].astype(np.int64) - clean[0].astype(np.int64)) * amplify
            ax.imshow(np.clip(diff, 0, 255).astype(np.uint8), interpolation="nearest")
            _frame(ax, None)
            if r == 0:
                ax.set_title(f"|x'−x|×{amplify:g}", fontsize=7)
    return fig


def _frame(ax, label: str | None, dashed: bool = False) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(dashed)
        spine.set_linestyle("--")
    if label:
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)


def render_gallery(dataset: Any, out_dir: str | Path, attacks: Sequence[str | dict] | None = None, seed: int = 0,
                   ctx_factory: CtxFactory | None = None, *, n_images: int = 6,
                   amplify: float | None = 5.0) -> list[Path]:
    """Write ``trigger_gallery.png`` and ``.pdf`` into ``out_dir``; returns the two paths.

    ``dataset`` has a ``test`` split (``images`` uint8 NHWC, ``labels``); ``attacks`` are registered
    names or ``{name: ..., param: ...}`` mappings (default: every registered image attack);
    ``ctx_factory(attack, seed)`` returns the :class:`AttackContext` of an attack that trains parts.
    """
    from ebyd_bench.reports import style

    images, labels = clean_examples(dataset, n_images)
    rows = gallery_rows(images, labels, attacks, seed, ctx_factory)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with style.context():
        fig = gallery_figure(images, rows, amplify)
        fig.suptitle(f"Image attack triggers (seed {seed}); last column: amplified difference of the first image",
                     fontsize=8)
        return style.save(fig, out, "trigger_gallery")
