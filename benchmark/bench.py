"""``ebyd-bench bench``: how fast this machine trains victims, and what a grid will cost on it.

Two loops on the same model, batch size and synthetic CIFAR-sized data:

* **project**: :func:`~ebyd_bench.benchmark.training.train_classifier`, the loop every victim is
  trained with (data uploaded once, crop + flip on the device, loss read every few steps);
* **bare**: the least a loop can do: pre-normalised batches already on the device, no augmentation,
  one read of the loss at the end. Its throughput is the ceiling the project loop is measured against.

With ``jobs`` > 1 the project loop also runs in that many processes at once on the same device
(the way ``run --jobs`` shares it), started together after their warm-up: their summed throughput is
the measured aggregate, and each worker's peak device memory is the per-stage footprint that decides
how many fit. With a grid config, the throughput projects the grid's victim-training time (poisoned
models × epochs × training images): at the measured aggregate, or in one worker. Stage times of an
earlier run come from its records (per stage kind, and per exposure and defense for the whole-grid
projection of :mod:`ebyd_bench.benchmark.grid.projection`).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ebyd_bench.benchmark.registries import MODELS
from ebyd_bench.benchmark.training import TrainRecipe, resolve_precision, train_classifier


@dataclass(frozen=True)
class BenchSetting:
    model: str = "resnet18"
    batch_size: int = 128
    steps: int = 40
    precision: str = "auto"
    device: str = "cpu"
    compile: str = "off"  # the project loop's torch.compile mode (TrainRecipe.compile)
    seed: int = 0


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _data(setting: BenchSetting, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(setting.seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


@dataclass(frozen=True)
class Throughput:
    """Images per second of a training loop, and the most device memory it held (``None`` on CPU)."""

    img_per_s: float
    peak_gpu_bytes: int | None = None


def _peak_gpu_bytes(device: str) -> int | None:
    """Most memory the caching allocator reserved on a GPU (what another process cannot use)."""
    return int(torch.cuda.max_memory_reserved(device)) if torch.device(device).type == "cuda" else None


def _warm_project_loop(setting: BenchSetting) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, TrainRecipe]:
    """Model, data and recipe of the project loop, after one untimed warm-up epoch of four batches (which
    also pays for the compilation when ``setting.compile`` asks for one)."""
    images, labels = _data(setting, setting.steps * setting.batch_size)
    recipe = resolve_precision(TrainRecipe(name="bench", epochs=1, batch_size=setting.batch_size,
                                           schedule="multistep", precision=setting.precision,
                                           compile=setting.compile), setting.device)
    model = MODELS.get(setting.model)(num_classes=10)
    warm = 4 * setting.batch_size
    train_classifier(model, images[:warm], labels[:warm], recipe, setting.seed, setting.device, desc="warm-up")
    _synchronize(setting.device)
    return model, images, labels, recipe


def _timed_epoch(setting: BenchSetting, prepared: tuple) -> tuple[float, float]:
    """Start and end (``time.monotonic``, comparable across processes) of one timed epoch."""
    model, images, labels, recipe = prepared
    start = time.monotonic()
    train_classifier(model, images, labels, recipe, setting.seed, setting.device, desc="bench")
    _synchronize(setting.device)
    return start, time.monotonic()


def project_loop(setting: BenchSetting) -> Throughput:
    """Throughput of ``train_classifier``: one timed epoch of ``steps`` batches after the warm-up."""
    prepared = _warm_project_loop(setting)
    if torch.device(setting.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(setting.device)
    start, end = _timed_epoch(setting, prepared)
    return Throughput(setting.steps * setting.batch_size / (end - start), _peak_gpu_bytes(setting.device))


def _concurrent_worker(setting: BenchSetting, threads: int, barrier: Any, results: Any) -> None:
    """One of :func:`concurrent_project_loops`' processes: warm up, wait for the others, time one epoch."""
    try:
        torch.set_num_threads(threads)
        prepared = _warm_project_loop(setting)
        barrier.wait()
        start, end = _timed_epoch(setting, prepared)
        results.put((start, end, _peak_gpu_bytes(setting.device), None))
    except BaseException as error:  # noqa: BLE001 - reported by the parent, which raises
        barrier.abort()
        results.put((0.0, 0.0, None, f"{type(error).__name__}: {error}"))


def _collect(procs: list[Any], barrier: Any, results: Any) -> list[tuple]:
    """Every worker's report; a worker that died without one (killed, out of memory) releases the others
    from the barrier and counts as an error."""
    reports: list[tuple] = []
    while len(reports) < len(procs):
        try:
            reports.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
            if dead:
                barrier.abort()
                return reports + [(0.0, 0.0, None, f"a worker exited with code {dead[0]} without a report")]
    return reports


def concurrent_project_loops(setting: BenchSetting, workers: int, threads: int) -> tuple[Throughput, list[float]]:
    """The project loop in ``workers`` processes at once on ``setting.device``, ``threads`` intra-op threads
    each (``run --jobs`` gives a worker its share of the cores), timed from a common start after every
    warm-up.

    Returns the aggregate (all images over the span from the first start to the last end; the
    largest worker's peak memory) and each worker's own images per second."""
    context = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, results = context.Barrier(workers), context.Queue()
    procs = [context.Process(target=_concurrent_worker, args=(setting, threads, barrier, results))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    try:
        reports = _collect(procs, barrier, results)
    finally:
        for proc in procs:
            proc.join()
    errors = [error for *_, error in reports if error]
    if errors:
        raise RuntimeError(f"a concurrent bench worker failed: {errors[0]}")
    n = setting.steps * setting.batch_size
    span = max(end for _, end, _, _ in reports) - min(start for start, _, _, _ in reports)
    peaks = [peak for _, _, peak, _ in reports if peak is not None]
    aggregate = Throughput(workers * n / span, max(peaks) if peaks else None)
    return aggregate, [n / (end - start) for start, end, _, _ in reports]


def bare_loop(setting: BenchSetting) -> float:
    """Images per second of a minimal SGD loop over batches already normalised on the device."""
    device = torch.device(setting.device)
    precision = resolve_precision(TrainRecipe(precision=setting.precision), setting.device).precision
    torch.manual_seed(setting.seed)
    model = MODELS.get(setting.model)(num_classes=10).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(setting.batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (setting.batch_size,), device=device)

    def steps(count: int) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for _ in range(count):
            with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().float()
        return total

    steps(4).item()  # warm-up
    start = time.perf_counter()
    steps(setting.steps).item()
    return setting.steps * setting.batch_size / (time.perf_counter() - start)


#: the parts of a cell's time, as its record's ``timings`` name them
CELL_PARTS = ("defend", "evaluate", "diagnostics")


def _timings(records: Any) -> Any:
    return records["timings"].apply(lambda t: t if isinstance(t, dict) else {})


def _once(records: Any, timings: Any, kind: str, unique: str) -> Any:
    """The records with ``_t``, the seconds of their stage ``kind``, one row per distinct ``unique`` key
    (a poisoned model or exposure is shared by many cells but ran once)."""
    timed = records.assign(_t=timings.map(lambda t: t.get(kind))).dropna(subset=[unique, "_t"])
    return timed.drop_duplicates(subset=unique)


def stage_seconds(records: Any) -> dict[str, float]:
    """Mean seconds per stage kind in a run's records (each poisoned model and exposure counted once)."""
    if records.empty or "timings" not in records:
        return {}
    timings = _timings(records)
    out: dict[str, float] = {}
    for kind, unique in (("train", "cache_key"), ("expose", "exposure_key")):
        if unique in records:
            once = _once(records, timings, kind, unique)
            if len(once):
                out[kind] = float(once["_t"].mean())
    for kind in CELL_PARTS:
        values = [t[kind] for t in timings if kind in t]
        if values:
            out[kind] = float(np.mean(values))
    return out


def method_seconds(records: Any) -> dict[tuple[str, str], float]:
    """Mean seconds of each exposure, ``("expose", label)``, every exposed model counted once, and of each
    defense's cell, ``("cell", label)``: its defend, evaluate and diagnostics parts, in a run's records."""
    if records.empty or "timings" not in records:
        return {}
    timings = _timings(records)
    out: dict[tuple[str, str], float] = {}
    if "exposure_key" in records:
        for label, part in _once(records, timings, "expose", "exposure_key").groupby("exposure_label"):
            out[("expose", str(label))] = float(part["_t"].mean())
    cells = records.assign(_t=timings.map(lambda t: sum(t.get(k, 0.0) for k in CELL_PARTS)))
    for label, part in cells.groupby("defense_label"):
        out[("cell", str(label))] = float(part["_t"].mean())
    return out


def project_training(grid: Any, train_split: int, images_per_second: float, jobs: int = 1) -> dict[str, Any]:
    """Victim-training hours of image ``grid`` (its training split holds ``train_split`` samples) at
    ``images_per_second``: one worker's rate, or the measured aggregate of ``jobs`` concurrent workers."""
    models = len(grid.models())
    rest = train_split - grid.dataset.defense_size
    train_size = min(grid.dataset.train_subset or rest, rest)
    victim_seconds = grid.recipe.epochs * train_size / images_per_second
    return {"models": models, "epochs": grid.recipe.epochs, "train_images": train_size, "jobs": jobs,
            "img_per_s": images_per_second, "victim_seconds": victim_seconds, "hours": models * victim_seconds / 3600}
