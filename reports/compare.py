"""Regression check between two result stores: which numbers moved, which cells vanished, what got slower.

Cells are matched by ``cell_key`` (the default, ``match="key"``): it hashes everything that
determines a cell — data digest, attack/exposure/defense names, versions and parameters, model,
recipe, seed, evaluation subset — so equal keys mean "the same experiment, re-run". When a
deliberate code-version bump changes every key, ``match="fields"`` pairs cells by (dataset,
model, attack + parameters, exposure, defense + parameters, seed) instead.

Compared metrics: ``ca``, ``asr``, ``bem``, ``exposed_ca``, ``exposed_asr`` and every numeric
score-like field of ``defense_info`` (``*_auroc``, ``*_acc``, ``anomaly_index`` …; see
``ebyd_bench.reports.fields.is_score``). A metric *regressed* when |current − baseline| exceeds its absolute
tolerance, in either direction: a nightly run of fixed code should reproduce its numbers, and an
unexplained improvement needs a new baseline just as much as a drop. A cell that is in the
baseline but not in the current run also fails the check; new cells and wall-clock changes are
reported for information only. The run's own wall-clock is ``wall_seconds`` of each store's
``summary.json`` (what ``ebyd-bench run`` spent, cached stages costing nothing); per-cell stage times
count a cached model's original training time, so their sum says nothing about what a run spent.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from ebyd_bench.results.schema import HEADLINE_METRICS, IDENTITY_FIELDS
from ebyd_bench.results.store import load_records

TOP_LEVEL_METRICS = HEADLINE_METRICS  # ca, asr, bem, exposed_ca, exposed_asr
DEFAULT_TOLERANCES = {"ca": 0.01, "asr": 0.02, "bem": 0.05, "exposed_ca": 0.02, "exposed_asr": 0.02, "default": 0.02}
ENVIRONMENT_KEYS = ("git_commit", "package_version", "python", "torch", "torchvision", "numpy")
Match = Literal["key", "fields"]


@dataclass(frozen=True)
class Change:
    """One metric of one cell that moved beyond its tolerance."""

    cell: str
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.current is None else self.current - self.baseline


@dataclass(frozen=True)
class Timing:
    """Wall-clock of one matched cell in both runs (seconds)."""

    cell: str
    baseline: float
    current: float

    @property
    def ratio(self) -> float:
        return self.current / self.baseline if self.baseline > 0 else math.inf


@dataclass
class Comparison:
    """Everything `compare` found; `regressed` decides the exit code."""

    matched: int
    changes: list[Change] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the baseline, not in the current run
    added: list[str] = field(default_factory=list)  # new in the current run (informational)
    timings: list[Timing] = field(default_factory=list)  # beyond the time tolerance (informational)
    environment: list[tuple[str, str, str]] = field(default_factory=list)  # (what, baseline, current), informational
    #: summed per-cell stage times of the matched cells (cached stages count their original time)
    total_seconds: tuple[float, float] = (0.0, 0.0)
    #: each run's own wall-clock (``summary.json``'s ``wall_seconds``), None where not recorded
    run_seconds: tuple[float | None, float | None] = (None, None)

    @property
    def regressed(self) -> bool:
        return bool(self.changes or self.missing)


def parse_tolerances(text: str | None) -> dict[str, float]:
    """``"ca=0.01,asr=0.02,strip_auroc=0.03,default=0.05"`` -> defaults updated with these values."""
    tolerances = dict(DEFAULT_TOLERANCES)
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = (part.strip() for part in item.partition("="))
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not (sep and name and number >= 0):
            raise ValueError(f"bad tolerance '{item}': expected NAME=NUMBER >= 0, e.g. asr=0.02")
        tolerances[name] = number
    return tolerances


def load_store(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of one result store (a folder holding results.jsonl, or the file itself), upgraded to
    the current schema so that stores written by different versions compare field by field."""
    return [r.to_dict() for r in load_records(path)]


def run_wall_seconds(path: str | os.PathLike) -> float | None:
    """What the run of a store spent (``wall_seconds`` in ``summary.json`` next to ``results.jsonl``),
    or None when the store has no readable summary (an older run, a bare results file)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent  # an output folder, or its results.jsonl
    try:
        value = json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("wall_seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return _number(value)


def identity(record: dict[str, Any], match: Match = "key") -> str:
    """The matching key of a record: its ``cell_key``, or a canonical JSON of the identity fields."""
    if match == "key":
        if not record.get("cell_key"):
            raise ValueError("a record has no cell_key; compare with match='fields'")
        return str(record["cell_key"])
    return json.dumps({k: record.get(k) for k in IDENTITY_FIELDS}, sort_keys=True, default=str)


def describe(record: dict[str, Any]) -> str:
    """Human label of a cell: "badnets × cul × rp seed=0 (cifar10/resnet18) [6c1f54ab873d]"."""
    label = record.get("label") or " × ".join(str(record.get(k) or "none") for k in ("attack", "exposure", "defense"))
    key = str(record.get("cell_key") or "")[:12]
    where = f"{label} seed={record.get('seed')} ({record.get('dataset')}/{record.get('model')})"
    return f"{where} [{key}]" if key else where


def metrics(record: dict[str, Any]) -> dict[str, float | None]:
    """The compared metrics of one record: top-level ones plus score-like ``defense_info`` fields."""
    from ebyd_bench.reports.fields import numeric_scores

    out: dict[str, float | None] = {m: _number(record.get(m)) for m in TOP_LEVEL_METRICS if m in record}
    out.update({f"defense_info.{k}": v for k, v in numeric_scores(record.get("defense_info")).items()})
    return out


def wall_seconds(record: dict[str, Any]) -> float | None:
    """Wall-clock of a cell: ``timings["total"]`` if present, else the sum of its stage times."""
    timings = record.get("timings")
    if not isinstance(timings, dict):
        return None
    if _number(timings.get("total")) is not None:
        return float(timings["total"])
    values = [v for v in timings.values() if _number(v) is not None]
    return float(sum(values)) if values else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    return float(value) if ok else None


def _tolerance(metric: str, tolerances: dict[str, float]) -> float:
    """Tolerance of a metric: by full name, then by its bare name (``defense_info.x`` -> ``x``), then default."""
    bare = metric.removeprefix("defense_info.")
    return tolerances.get(metric, tolerances.get(bare, tolerances["default"]))


def metric_changes(cell: str, base: dict[str, Any], cur: dict[str, Any], tolerances: dict[str, float]) -> list[Change]:
    """Metrics of one matched cell that moved beyond tolerance, appeared or disappeared."""
    b, c = metrics(base), metrics(cur)
    changes = []
    for name in sorted(set(b) | set(c)):
        before, after, tol = b.get(name), c.get(name), _tolerance(name, tolerances)
        if before is None and after is None:
            continue
        if before is None or after is None:
            moved = True
        elif math.isinf(before) or math.isinf(after):
            moved = before != after
        else:
            moved = abs(after - before) > tol + 1e-12
        if moved:
            changes.append(Change(cell, name, before, after, tol))
    return changes


def environment(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Versions, git commit and device of a store's records ("a, b" when they differ within the store)."""
    values: dict[str, dict[str, None]] = {}
    for r in records:
        prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else {}
        hw = r.get("hardware") if isinstance(r.get("hardware"), dict) else {}
        for key, value in [*((k, prov.get(k)) for k in ENVIRONMENT_KEYS), ("device", hw.get("device_name"))]:
            if value is not None:
                values.setdefault(key, {})[str(value)] = None
    return {k: ", ".join(v) for k, v in values.items()}


def environment_changes(baseline: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """What differs between the two runs' environments: the usual explanation of a moved number."""
    b, c = environment(baseline), environment(current)
    return [(k, b.get(k, "–"), c.get(k, "–")) for k in sorted(set(b) | set(c)) if b.get(k) != c.get(k)]


def _index(records: Iterable[dict[str, Any]], match: Match) -> dict[str, dict[str, Any]]:
    """identity -> record (a re-run cell appended twice keeps its last record)."""
    return {identity(r, match): r for r in records}


def compare(baseline: list[dict[str, Any]], current: list[dict[str, Any]], tolerances: dict[str, float] | None = None,
            time_tolerance: float = 0.5, match: Match = "key",
            run_seconds: tuple[float | None, float | None] = (None, None)) -> Comparison:
    """Compare two stores' records; pure (no I/O). ``run_seconds``: each run's own wall-clock
    (:func:`run_wall_seconds`), reported as is."""
    tolerances = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    base, cur = _index(baseline, match), _index(current, match)
    common = [k for k in base if k in cur]
    result = Comparison(matched=len(common), missing=sorted(describe(base[k]) for k in base if k not in cur),
                        added=sorted(describe(cur[k]) for k in cur if k not in base),
                        environment=environment_changes(baseline, current), run_seconds=tuple(run_seconds))
    totals = [0.0, 0.0]
    for k in common:
        label = describe(cur[k])
        result.changes += metric_changes(label, base[k], cur[k], tolerances)
        tb, tc = wall_seconds(base[k]), wall_seconds(cur[k])
        if tb is not None and tc is not None:
            totals[0], totals[1] = totals[0] + tb, totals[1] + tc
            if abs(tc - tb) > time_tolerance * tb:
                result.timings.append(Timing(label, tb, tc))
    result.total_seconds = (totals[0], totals[1])
    return result


def _fmt(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")


def render_markdown(cmp: Comparison, baseline: str, current: str, time_tolerance: float = 0.5) -> str:
    """The regression report as Markdown (for a CI job summary, a chat message or a file)."""
    verdict = "REGRESSION" if cmp.regressed else "OK"
    lines = [f"# ebyd-bench compare: {verdict}", "",
             f"Baseline `{baseline}` vs current `{current}`: {cmp.matched} matched cells, "
             f"{len(cmp.changes)} metric changes beyond tolerance, {len(cmp.missing)} missing, "
             f"{len(cmp.added)} new.", ""]
    if cmp.changes:
        lines += ["## Metrics beyond tolerance", "", "| cell | metric | baseline | current | Δ | tolerance |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {c.cell} | `{c.metric}` | {_fmt(c.baseline)} | {_fmt(c.current)} | {_fmt(c.delta, True)} "
                  f"| {c.tolerance:g} |" for c in cmp.changes]
        lines.append("")
    for title, cells in (("Missing in current run (regression)", cmp.missing), ("New in current run", cmp.added)):
        if cells:
            lines += [f"## {title}", "", *(f"- {c}" for c in cells), ""]
    if cmp.environment:
        lines += ["## Environment changes (informational)", "", "| what | baseline | current |", "|---|---|---|",
                  *(f"| {k} | {b} | {c} |" for k, b, c in cmp.environment), ""]
    lines += ["## Wall-clock (informational)", "", _run_wall_clock(cmp.run_seconds), ""]
    if cmp.timings:
        lines += [f"Cells whose recorded stage times changed by more than {time_tolerance:.0%} (a cell counts its "
                  f"model's training and exposure time even when they came from the cache):", "",
                  "| cell | baseline s | current s | ratio |", "|---|---:|---:|---:|"]
        lines += [f"| {t.cell} | {t.baseline:.1f} | {t.current:.1f} | {t.ratio:.2f}× |" for t in cmp.timings]
        lines.append("")
    return "\n".join(lines)


def _run_wall_clock(run_seconds: tuple[float | None, float | None]) -> str:
    before, after = run_seconds
    if before is None and after is None:
        return "Run wall-clock: not recorded (neither store has a summary.json with wall_seconds)."
    text = f"Run wall-clock (summary.json): {_seconds(before)} → {_seconds(after)}"
    if before and after is not None:
        text += f" ({after / before:.2f}×)"
    return text + "."


def _seconds(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.1f} s"
