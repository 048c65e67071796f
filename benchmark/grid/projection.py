"""How long a grid will take on a device, from a finished run's stage times there.

Victim training is projected from a measured training rate (``ebyd-bench bench``); every exposure and
cell takes the mean time the same exposure or defense took in the finished run (matched by label),
since those depend on the defense data and the model, not on the victims' recipe. Each stage of the
grid is listed by :func:`~ebyd_bench.benchmark.grid.runner.plan`, so the projection counts exactly the
stages a run would execute (a defense that ignores the exposure counts once per model).
"""

from __future__ import annotations

from typing import Any

from ebyd_bench.benchmark.grid.config import Grid, ResolvedMethod
from ebyd_bench.benchmark.grid.runner import plan


class _LabelKeys:
    """Stand-in for :class:`~ebyd_bench.benchmark.grid.runner.Keys`: stages keyed by their labels, which
    needs neither the dataset nor the cache."""

    def model(self, attack: ResolvedMethod, seed: int) -> str:
        return f"{attack.shown}|{seed}"

    def exposure(self, model_key: str, exposure: ResolvedMethod, seed: int) -> str:
        return f"{model_key}|{exposure.shown}"

    def cell(self, model_key: str, exposure_key: str | None, defense: ResolvedMethod) -> str:
        return f"{exposure_key or model_key}|{defense.shown}"


def project_grid(grid: Grid, victim_seconds: float, measured: dict[tuple[str, str], float],
                 jobs: int = 1) -> dict[str, Any]:
    """Hours of ``grid``: every victim takes ``victim_seconds``; exposures and cells take ``measured``
    (:func:`~ebyd_bench.benchmark.bench.method_seconds` of a finished run). With ``jobs`` workers the
    run cannot be shorter than its stages' sum over ``jobs``, nor than its longest chain (a victim,
    its exposure, its slowest cell); the larger of the two is given. Stages of a method the finished
    run did not have count as zero and are listed under ``not_measured``."""
    stages, _ = plan(grid, _LabelKeys(), set())
    seconds: dict[str, float] = {}
    missing: set[str] = set()
    totals = {"train": 0.0, "expose": 0.0, "cell": 0.0}
    for stage in stages:  # plan lists every stage after the stages it reads
        if stage.kind == "train":
            own = victim_seconds
        else:
            label = stage.exposure if stage.kind == "expose" else stage.defense
            own = measured.get((stage.kind, label))
            if own is None:
                missing.add(f"{stage.kind} {label}")
                own = 0.0
        totals[stage.kind] += own
        seconds[stage.key] = own + max((seconds[d] for d in stage.deps), default=0.0)
    total = sum(totals.values())
    return {"stages": len(stages), "jobs": jobs,
            **{f"{kind}_hours": value / 3600 for kind, value in totals.items()},
            "one_worker_hours": total / 3600,
            "hours_at_jobs": max(total / jobs, max(seconds.values(), default=0.0)) / 3600,
            "not_measured": sorted(missing)}
