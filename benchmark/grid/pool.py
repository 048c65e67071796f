"""Concurrent stages: ``ebyd-bench run --jobs N [--device cuda:0,cuda:1]``.

One pool of worker processes per listed device, ``N`` workers each. A worker builds its
:class:`~ebyd_bench.benchmark.grid.runner.StageRunner` once (the dataset is loaded once per worker)
and executes any stage whose parents have finished: stages are scheduled as they become ready,
so a slow victim (Adv, Dynamic) does not hold back the others. Workers share the artifact cache
and its locks; a stage's parents' artifacts are read from the cache, and only metadata and
records travel back. The driver appends each record as it arrives and shows the one progress bar.

Ctrl-C stops every worker at once; what was already written (cached artifacts, appended records)
stays, and rerunning the same command resumes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from typing import Any

from ebyd_bench.benchmark.grid.config import Grid
from ebyd_bench.benchmark.grid.executor import Execute, OnDone, Stage, run_dispatched
from ebyd_bench.benchmark.grid.runner import Artifacts, RunOptions, StageRunner, log_to_file

#: estimated GPU memory one stage of the CIFAR ResNet-18 at batch 128 holds (weights, optimiser
#: state, activations, the uploaded uint8 split), used to pick --jobs on a GPU when it is not given
STAGE_GPU_BYTES = 3 * 2**30

_worker: StageRunner | None = None


def default_jobs(devices: list[str]) -> int:
    """Workers per device when ``--jobs`` is not given: 1 on CPUs (training already uses every core);
    on a GPU as many as its free memory holds at :data:`STAGE_GPU_BYTES` each, at most one per two cores."""
    if not all(d.startswith("cuda") for d in devices):
        return 1
    import torch

    free = min(torch.cuda.mem_get_info(torch.device(d))[0] for d in devices)
    per_device_cores = max(1, (os.cpu_count() or 2) // (2 * len(devices)))
    return max(1, min(int(free // STAGE_GPU_BYTES), per_device_cores))


def worker_threads(workers: int) -> int:
    """Intra-op threads per worker: this process's share. On CPU the numbers of a stage depend on its
    thread count (the order of oneDNN's reductions), so a --jobs N run equals a --jobs 1 run made with
    that many threads (e.g. OMP_NUM_THREADS=1 against --jobs 2 on two cores)."""
    import torch

    return max(1, torch.get_num_threads() // workers)


def _start_worker(grid: Grid, opts: RunOptions, threads: int) -> None:
    global _worker
    import torch

    os.environ["EBYD_PROGRESS"] = "0"  # the driver's bar is the run's one progress display
    torch.set_num_threads(threads)
    log_to_file(opts.out_dir)  # the worker's stage logs (cache hits, each cell's metrics) go to run.log too
    _worker = StageRunner(grid, opts)


def _run_in_worker(stage: Stage, inputs: dict[str, Any]) -> Any:
    output = _worker(stage, inputs)
    return output.without_tensors() if isinstance(output, Artifacts) else output


class PoolExecutor:
    """Runs stages in ``jobs`` worker processes per device (see the module docstring)."""

    def __init__(self, grid: Grid, opts: RunOptions, jobs: int, devices: list[str]) -> None:
        self.grid, self.opts, self.jobs, self.devices = grid, opts, jobs, devices

    def run(self, stages: list[Stage], execute: Execute, on_done: OnDone | None = None) -> dict[str, Any]:
        """``execute`` is not used: every worker runs its own StageRunner of the same grid."""
        if not stages:
            return {}
        context = mp.get_context("spawn")  # CUDA cannot be forked; every worker starts clean
        threads = worker_threads(self.jobs * len(self.devices))
        pools = [ProcessPoolExecutor(self.jobs, context, initializer=_start_worker,
                                     initargs=(self.grid, replace(self.opts, device=device), threads))
                 for device in self.devices]
        try:
            sinks = run_dispatched(stages, _Pools(pools), on_done)
        except BaseException:  # Ctrl-C, or a stage failed: stop every worker now
            _stop(pools)
            raise
        for pool in pools:
            pool.shutdown()
        return sinks


class _Pools:
    """Dispatches each stage to the least busy device's pool."""

    def __init__(self, pools: list[ProcessPoolExecutor]) -> None:
        self.pools, self.load, self.slot = pools, [0] * len(pools), {}

    def submit(self, stage: Stage, inputs: dict[str, Any]) -> Future:
        slot = self.load.index(min(self.load))
        future = self.pools[slot].submit(_run_in_worker, stage, inputs)
        self.load[slot] += 1
        self.slot[future] = slot
        return future

    def wait(self, handles: list[Future]) -> list[tuple[Future, Any]]:
        finished, _ = wait(handles, return_when=FIRST_COMPLETED)
        for future in finished:
            self.load[self.slot.pop(future)] -= 1
        return [(future, future.result()) for future in finished]


def _stop(pools: list[ProcessPoolExecutor]) -> None:
    """Cancel what has not started and kill what runs (Ctrl-C, or a stage failed)."""
    for pool in pools:
        processes = list((pool._processes or {}).values())  # no public way to reach the workers
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(timeout=10)
