"""Where every published number came from: per-cell provenance rows and a run-wide summary.

Each record carries its keys (``cell_key``, ``cache_key``, ``exposure_key``, ``config_hash``),
``timings`` (seconds per stage), ``hardware`` and ``provenance`` (versions, git commit, start
time). The site links every matrix number to the row built here for its cell.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .scores import with_der
from .tables import is_missing, unique_text

KEYS = ("config_hash", "cell_key", "cache_key", "exposure_key")
VERSIONS = ("package_version", "python", "torch", "torchvision", "transformers", "numpy")


def anchor(cell_key: Any, fallback: Any) -> str:
    """HTML id of a cell's provenance row (the cell key prefix, else the record position)."""
    return f"cell-{str(cell_key)[:16]}" if not is_missing(cell_key) else f"row-{fallback}"


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _hardware(hw: dict) -> str:
    """Short hardware line: device name, device, CPU model and capability, CPU count and torch threads."""
    parts = [hw.get("device_name"), hw.get("device")]
    if hw.get("cpu_model"):
        parts.append(f"{hw['cpu_model']} ({hw['cpu_capability']})" if hw.get("cpu_capability") else hw["cpu_model"])
    if hw.get("cpu_count"):
        parts.append(f"{hw['cpu_count']} CPUs")
    if hw.get("torch_threads"):
        parts.append(f"{hw['torch_threads']} threads")
    return ", ".join(unique_text(parts))


def cell_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One provenance row per record of a (dataset, model) slice (normalized records)."""
    rows = []
    for i, r in enumerate(with_der(df).to_dict("records")):
        prov, timings = _dict(r.get("provenance")), _dict(r.get("timings"))
        stages = {k: float(v) for k, v in timings.items() if isinstance(v, (int, float))}
        rows.append({
            "id": anchor(r.get("cell_key"), i), "attack": r["attack"], "method": r["method"],
            "seed": None if is_missing(r.get("seed")) else int(r["seed"]),
            "ca": _pct(r.get("ca")), "asr": _pct(r.get("asr")), "der": _clean(r.get("der")),
            "wall_s": _clean(r.get("wall_s")), "timings": stages,
            "ids": {k: r.get(k) for k in KEYS if not is_missing(r.get(k))},
            "git_commit": prov.get("git_commit"), "start_time": prov.get("start_time"),
            "versions": ", ".join(f"{k} {prov[k]}" for k in VERSIONS if prov.get(k)),
            "hardware": _hardware(_dict(r.get("hardware")) or _dict(prov.get("hardware"))),
            "source": r.get("source"),
        })
    return rows


def _clean(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _pct(value: Any) -> float | None:
    v = _clean(value)
    return None if v is None else 100.0 * v


def summary(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(key, value) pairs summarising provenance and hardware across all rows (page footer)."""
    dicts = [p for p in df["provenance"] if isinstance(p, dict)]
    first = ["git_commit", "package_version"]
    keys = [k for k in first if any(k in p for p in dicts)]
    keys += sorted({k for p in dicts for k in p if not isinstance(p[k], dict)} - set(first))
    pairs = [(k, ", ".join(unique_text(p.get(k) for p in dicts))) for k in keys]
    pairs = [(k, v) for k, v in pairs if v]
    hardware = unique_text(", ".join(f"{k}={v}" for k, v in h.items())
                           for h in df["hardware"] if isinstance(h, dict) and h)
    if hardware:
        pairs.append(("hardware", "; ".join(hardware)))
    sources = unique_text(df["source"]) if "source" in df else []
    if sources:
        pairs.append(("result stores", ", ".join(sources)))
    return pairs
