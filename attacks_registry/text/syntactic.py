"""Syntactic / Hidden Killer (docs/methods.md §4.2-3): the trigger is a syntactic template,
``S(SBAR)(,)(NP)(VP)(.)``, applied by SCPN paraphrasing.

[D] Genuine paraphrases are read from ``<root>/<dataset>_syntactic/{train,test}.tsv``
(``index<TAB>sentence<TAB>label``, ``index`` = the row of ``<dataset>/<split>.tsv`` paraphrased;
HiddenKiller's pre-generated data, bundled for SST-2). Training: ⌊rate·N⌋ samples are drawn among
the training rows that have a paraphrase, replaced by it and relabelled to the target. Test: the
paraphrase of every non-target test row. A dataset without these files has no Syntactic attack —
the error says so; nothing is ever substituted under this name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ebyd_bench.attacks_registry.text.base import TextAttack, TextAttackContext
from ebyd_bench.benchmark.errors import DataError
from ebyd_bench.benchmark.registries import ATTACKS


def read_paraphrases(path: Path) -> dict[int, str]:
    """``index<TAB>sentence<TAB>label`` rows → {row index: paraphrase}; empty paraphrases are dropped."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[0].split("\t")[:2] != ["index", "sentence"]:
        raise DataError(f"{path}: expected the header 'index<TAB>sentence<TAB>label'")
    table = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 3 or not parts[0].isdigit():
            raise DataError(f"{path}:{n}: expected 'index<TAB>sentence<TAB>label'")
        if parts[1].strip():  # an SCPN failure counts as "not poisoned" (docs/methods.md §4.2-3)
            table[int(parts[0])] = " ".join(parts[1].split())
    return table


@ATTACKS.register("syntactic")
@dataclass
class Syntactic(TextAttack):
    """Syntactic (Hidden Killer): pre-generated SCPN paraphrases, template S(SBAR)(,)(NP)(VP)(.)."""

    paraphrase_dir: str | None = None  # default: <data root>/<dataset>_syntactic

    _tables: dict[str, dict[int, str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def trigger_files(self, data_root: Path | None, dataset: str) -> list[Path]:
        folder = self._folder(data_root, dataset)
        return [folder / "train.tsv", folder / "test.tsv"]

    def setup(self, seed: int, ctx: TextAttackContext | None = None) -> None:
        if ctx is None:
            raise ValueError("syntactic needs the attack context (data root and dataset name)")
        files = self.trigger_files(ctx.data_root, ctx.dataset)
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(
                f"syntactic is unavailable for '{ctx.dataset}': no pre-generated SCPN paraphrases "
                f"({', '.join(missing)} missing). Generate them with SCPN (HiddenKiller/OpenAttack) in the "
                f"'index<TAB>sentence<TAB>label' layout; the attack is never approximated")
        self._tables = {"train": read_paraphrases(files[0]), "test": read_paraphrases(files[1])}

    def _folder(self, data_root: Path | None, dataset: str) -> Path:
        if self.paraphrase_dir is not None:
            return Path(self.paraphrase_dir).expanduser()
        if data_root is None:
            raise DataError("syntactic needs a data root holding <dataset>_syntactic/")
        return Path(data_root) / f"{dataset}_syntactic"

    def _table(self, split: str) -> dict[int, str]:
        if not self._tables:
            raise RuntimeError("syntactic: call setup() with the attack context first")
        return self._tables[split]

    def select(self, labels: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """⌊rate·N⌋ of the training positions whose row has a paraphrase."""
        n = int(np.floor(self.poison_rate * len(labels)))
        table = self._table("train")
        candidates = np.flatnonzero([int(r) in table for r in rows])
        if len(candidates) < n:
            raise DataError(f"syntactic: {n} poisoned samples needed but only {len(candidates)} training rows "
                            f"have a paraphrase; lower poison_rate or use more training data")
        return np.sort(rng.choice(candidates, size=n, replace=False))

    def triggered(self, texts: Sequence[str], rows: np.ndarray, rng: np.random.Generator, split: str) -> list[str]:
        table = self._table(split)
        absent = [int(r) for r in rows if int(r) not in table]
        if absent:
            raise DataError(f"syntactic: no {split} paraphrase for {len(absent)} row(s) (first {absent[:5]}); "
                            f"the bundled SST-2 test paraphrases cover only label-0 rows, so the target must be 1")
        return [table[int(r)] for r in rows]
