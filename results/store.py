"""``OUT/results.jsonl``: one JSON object per finished grid cell, appended durably.

Each append takes a file lock, writes one line and fsyncs, so concurrent runners sharing an
output folder never interleave lines and a crash loses at most the cell being written. A torn
last line (a crash mid-write) is ignored when reading, and the cell simply runs again.

Every line is a :class:`~ebyd_bench.results.schema.CellRecord` (``to_dict()``); readers get records
of older schema versions upgraded (:meth:`CellRecord.from_dict`), so they see one shape.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from ebyd_bench.benchmark.io import cache_lock
from ebyd_bench.results.schema import CellRecord

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"


class ResultStore:
    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / RESULTS_FILE

    def append(self, record: CellRecord | Mapping[str, Any]) -> None:
        """Append one record durably; a mapping is read like a stored line (:meth:`CellRecord.from_dict`)."""
        if not isinstance(record, CellRecord):
            record = CellRecord.from_dict(record)
        line = json.dumps(record.to_dict(), sort_keys=True, default=str)
        with cache_lock(self.path):
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def records(self) -> list[CellRecord]:
        """The store's records, upgraded to the current schema."""
        return load_records(self.path) if self.path.exists() else []

    def finished_cells(self) -> set[str]:
        return {r["cell_key"] for r in read_records(self.path) if "cell_key" in r} if self.path.exists() else set()


def read_records(path: Path) -> Iterable[dict[str, Any]]:
    """The raw JSON objects of a store, as written (no schema upgrade; see :func:`load_records`)."""
    for _, record in _numbered(path):
        yield record


def _numbered(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a torn or malformed line", path, lineno)


def load_records(path: str | os.PathLike) -> list[CellRecord]:
    """The records of one store (a folder holding ``results.jsonl``, or the file), upgraded to the
    current schema. A line that is not a record of any known version is a ValueError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}")
    out = []
    for lineno, raw in _numbered(path):
        try:
            out.append(CellRecord.from_dict(raw))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{lineno}: not a result record: {exc}") from None
    return out


def load_results(*paths: str | os.PathLike) -> pd.DataFrame:
    """Load result stores (output folders holding ``results.jsonl``, or the files) into one DataFrame:
    one row per record in the current schema's shape (:meth:`CellRecord.to_dict`), plus ``source``."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        path = Path(p)
        path = path / RESULTS_FILE if path.is_dir() else path
        rows.extend({**r.to_dict(), "source": str(path)} for r in load_records(path))
    return pd.DataFrame(rows)


def with_exposure_labels(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` with each ``exposure`` replaced by its ``exposure_label`` where one is set, so that
    two settings of one exposure method in a grid (told apart by ``label``) are shown, grouped and
    counted apart instead of being merged like seeds. Records from before the field are unchanged."""
    if "exposure_label" not in records or "exposure" not in records:
        return records
    labels = records["exposure_label"]
    return records.assign(exposure=labels.where(labels.notna(), records["exposure"]))
