"""``ebyd-bench run --executor ray``: one Ray task per stage, on one machine or a cluster.

Each stage is a task with its share of a GPU (``1/jobs`` of one when the device is CUDA) or one
CPU; a Ray worker process builds its :class:`~ebyd_bench.benchmark.grid.runner.StageRunner` once
(the dataset is loaded once per worker process) and reuses it for the stages it is given. Parents'
artifacts are read from the cache, which must therefore be on a filesystem every node sees (as must
the data root); the driver appends every record to ``OUT/results.jsonl`` itself.

Connects to ``RAY_ADDRESS`` when set (a cluster started with ``ray start --head`` on one node and
``ray start --address HEAD:6379`` on the others), else starts a local Ray instance. Install with
``pip install 'ebyd-bench[ray]'``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from ebyd_bench.benchmark.cache import stable_hash
from ebyd_bench.benchmark.errors import BenchmarkError
from ebyd_bench.benchmark.grid.config import Grid
from ebyd_bench.benchmark.grid.executor import Execute, OnDone, Stage, run_dispatched
from ebyd_bench.benchmark.grid.pool import worker_threads
from ebyd_bench.benchmark.grid.runner import Artifacts, RunOptions, StageRunner

log = logging.getLogger(__name__)

_runners: dict[str, StageRunner] = {}  # per Ray worker process: one runner per grid and options


def _run_stage(grid: Grid, opts: RunOptions, threads: int, stage: Stage, inputs: dict[str, Any]) -> Any:
    """The body of a Ray task (runs in a Ray worker process)."""
    import torch

    os.environ["EBYD_PROGRESS"] = "0"
    torch.set_num_threads(threads)
    ident = f"{stable_hash(grid.to_raw())}:{opts}"  # each task gets a fresh copy of the grid: compare by content
    if ident not in _runners:
        _runners.clear()  # one grid at a time per worker
        _runners[ident] = StageRunner(grid, opts)
    output = _runners[ident](stage, inputs)
    return output.without_tensors() if isinstance(output, Artifacts) else output


class RayExecutor:
    """Runs each stage as a Ray task (see the module docstring)."""

    def __init__(self, grid: Grid, opts: RunOptions, jobs: int, address: str | None = None) -> None:
        self.grid, self.opts, self.jobs = grid, opts, jobs
        self.address = address or os.environ.get("RAY_ADDRESS")

    def run(self, stages: list[Stage], execute: Execute, on_done: OnDone | None = None) -> dict[str, Any]:
        try:
            import ray
        except ImportError:
            raise BenchmarkError("--executor ray needs Ray: pip install 'ebyd-bench[ray]'") from None
        if not stages:
            return {}
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     **({} if self.address else {"num_cpus": max(self.jobs, 1)}))
        gpu = self.opts.device.startswith("cuda")
        # Ray picks the GPU and sets CUDA_VISIBLE_DEVICES: the task sees its GPU as cuda:0
        opts = replace(self.opts, device="cuda:0") if gpu else self.opts
        task = ray.remote(num_cpus=0 if gpu else 1, num_gpus=1 / self.jobs if gpu else 0)(_run_stage)
        dispatcher = _RayTasks(ray, task, ray.put(self.grid), opts, worker_threads(self.jobs))
        try:
            return run_dispatched(stages, dispatcher, on_done)
        except BaseException:
            for ref in dispatcher.running:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()


class _RayTasks:
    """Dispatches each stage as a Ray task."""

    def __init__(self, ray: Any, task: Any, grid_ref: Any, opts: RunOptions, threads: int) -> None:
        self.ray, self.task, self.grid_ref, self.opts, self.threads = ray, task, grid_ref, opts, threads
        self.running: set[Any] = set()

    def submit(self, stage: Stage, inputs: dict[str, Any]) -> Any:
        ref = self.task.remote(self.grid_ref, self.opts, self.threads, stage, inputs)
        self.running.add(ref)
        return ref

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any]]:
        finished, _ = self.ray.wait(handles, num_returns=1)
        self.running.difference_update(finished)
        return [(ref, self.ray.get(ref)) for ref in finished]
