"""``OUT/results.jsonl``: one JSON object per finished grid cell, appended durably.

Each append takes a file lock, writes one line and fsyncs, so concurrent runners sharing an
output folder never interleave lines and a crash loses at most the cell being written. A torn
last line (a crash mid-write: no trailing newline) is ignored when reading, so its cell runs
again; the next append first sets the fragment aside in ``results.torn.jsonl`` (under the lock,
with one warning) so that the new record starts on a line of its own. A line that holds a record
appended onto such a fragment (written by versions before this check) is read as that record.

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

from ebyd_bench.benchmark.io import atomic_write_text, cache_lock, naming
from ebyd_bench.results.schema import CellRecord

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
TORN_FILE = "results.torn.jsonl"  # fragments of torn lines, set aside by ResultStore.repair


class ResultStore:
    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / RESULTS_FILE
        self._checked = False  # whether this instance has looked for torn lines (on its first append)

    def append(self, record: CellRecord | Mapping[str, Any]) -> None:
        """Append one record durably; a mapping is read like a stored line (:meth:`CellRecord.from_dict`).
        A torn last line left by a crash is set aside first (:meth:`repair`)."""
        if not isinstance(record, CellRecord):
            record = CellRecord.from_dict(record)
        line = json.dumps(record.to_dict(), sort_keys=True, default=str)
        with cache_lock(self.path):
            if not self._checked or not _ends_cleanly(self.path):
                self._repair_locked()
            _append_whole(self.path, (line + "\n").encode("utf-8"))

    def repair(self) -> int:
        """Set aside every line that is not a JSON object (torn by a crash) in ``results.torn.jsonl``
        and rewrite the store atomically without them; a record appended onto a torn fragment is kept
        on a line of its own. Returns how many lines were set aside (0: nothing written)."""
        with cache_lock(self.path):
            return self._repair_locked()

    def _repair_locked(self) -> int:
        self._checked = True
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        if not data or (data.endswith(b"\n") and not _has_bad_line(data)):
            return 0
        kept, torn = [], []
        for raw in data.decode("utf-8", errors="replace").split("\n"):
            if not raw.strip():
                continue
            record, fragment = _split_line(raw)
            if fragment:
                torn.append(fragment)
            if record is not None:
                kept.append(raw[len(fragment):])
        if torn:
            torn_path = self.path.with_name(TORN_FILE)
            with open(torn_path, "a", encoding="utf-8") as f:  # first, so a crash below loses nothing
                f.write("".join(t + "\n" for t in torn))
                f.flush()
                os.fsync(f.fileno())
            log.warning("%s: set aside %d torn line(s) (a crash mid-write) in %s; their cells run again",
                        self.path, len(torn), torn_path.name)
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        return len(torn)

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
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record, fragment = _split_line(line)
        if fragment:
            last = lineno == len(lines)  # no newline after it: a crash while it was being written
            log.warning("%s:%d: skipping %s", path, lineno,
                        "a torn last line (its cell runs again)" if last and record is None
                        else "the torn start of a line" if record is not None else "a malformed line")
        if record is not None:
            yield lineno, record


def _split_line(line: str) -> tuple[dict[str, Any] | None, str]:
    """(record, fragment) of one stored line: a JSON object and no fragment, a record appended onto
    a torn fragment (an older version did not start it on a fresh line), or no record at all."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value, ""
    start = line.find('{"', 1)
    while start > 0:
        try:
            value = json.loads(line[start:])
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and "cell_key" in value:
            return value, line[:start]
        start = line.find('{"', start + 1)
    return None, line


def _ends_cleanly(path: Path) -> bool:
    """Whether the store is missing, empty or ends with a newline (the last append completed)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _has_bad_line(data: bytes) -> bool:
    for raw in data.split(b"\n"):
        if raw.strip():
            try:
                if isinstance(json.loads(raw), dict):
                    continue
            except ValueError:
                pass
            return True
    return False


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


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` durably, all of it or nothing: a write that fails part-way (a full disk) is cut
    back off before the error propagates, so the store never keeps half a record."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, start)
            raise naming(exc, path)
    finally:
        os.close(fd)
