"""``OUT/results.jsonl``: one JSON object per finished grid cell, appended durably.

Each append takes a file lock, writes one line and fsyncs, so concurrent runners sharing an
output folder never interleave lines and a crash loses at most the cell being written. A torn
last line (a crash mid-write) is ignored when reading, and the cell simply runs again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ebyd_bench.benchmark.io import cache_lock

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SCHEMA_VERSION = 1


class ResultStore:
    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / RESULTS_FILE

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"schema_version": SCHEMA_VERSION, **record}, sort_keys=True, default=str)
        with cache_lock(self.path):
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def records(self) -> list[dict[str, Any]]:
        return list(read_records(self.path)) if self.path.exists() else []

    def finished_cells(self) -> set[str]:
        return {r["cell_key"] for r in self.records() if "cell_key" in r}


def read_records(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a torn or malformed line", path, lineno)


def load_results(*paths: str | os.PathLike) -> pd.DataFrame:
    """Load result files (or output folders holding ``results.jsonl``) into one DataFrame."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / RESULTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"no results at {path}")
        rows.extend({**r, "source": str(path)} for r in read_records(path))
    return pd.DataFrame(rows)


def with_exposure_labels(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` with each ``exposure`` replaced by its ``exposure_label`` where one is set, so that
    two settings of one exposure method in a grid (told apart by ``label``) are shown, grouped and
    counted apart instead of being merged like seeds. Records from before the field are unchanged."""
    if "exposure_label" not in records or "exposure" not in records:
        return records
    labels = records["exposure_label"]
    return records.assign(exposure=labels.where(labels.notna(), records["exposure"]))
