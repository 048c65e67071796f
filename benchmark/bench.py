"""``ebyd-bench bench``: how fast this machine trains victims, and what a grid will cost on it.

Two loops on the same model, batch size and synthetic CIFAR-sized data:

* **project**: :func:`~ebyd_bench.benchmark.training.train_classifier`, the loop every victim is
  trained with (data uploaded once, crop + flip on the device, loss read every few steps);
* **bare**: the least a loop can do: pre-normalised batches already on the device, no augmentation,
  one read of the loss at the end. Its throughput is the ceiling the project loop is measured against.

With a grid config, the measured project throughput projects the grid's victim-training time
(poisoned models × epochs × training images), divided among ``jobs`` concurrent workers as if they
did not slow each other down (an upper bound on the gain; on a GPU that is nearly true at batch 128,
where one process leaves it mostly idle). Stage times of an earlier run come from its records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
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


def project_loop(setting: BenchSetting) -> float:
    """Images per second of ``train_classifier`` (one epoch of ``steps`` batches, after one warm-up epoch,
    which also pays for the compilation when ``setting.compile`` asks for one)."""
    n = setting.steps * setting.batch_size
    images, labels = _data(setting, n)
    recipe = resolve_precision(TrainRecipe(name="bench", epochs=1, batch_size=setting.batch_size,
                                           schedule="multistep", precision=setting.precision,
                                           compile=setting.compile), setting.device)
    model = MODELS.get(setting.model)(num_classes=10)
    warm = replace(recipe, epochs=1)
    train_classifier(model, images[: 4 * setting.batch_size], labels[: 4 * setting.batch_size], warm,
                     setting.seed, setting.device, desc="warm-up")
    _synchronize(setting.device)
    start = time.perf_counter()
    train_classifier(model, images, labels, recipe, setting.seed, setting.device, desc="bench")
    _synchronize(setting.device)
    return n / (time.perf_counter() - start)


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


def stage_seconds(records: Any) -> dict[str, float]:
    """Mean seconds per stage kind in a run's records (each poisoned model and exposure counted once)."""
    if records.empty or "timings" not in records:
        return {}
    timings = records["timings"].apply(lambda t: t if isinstance(t, dict) else {})
    out: dict[str, float] = {}
    for kind, unique in (("train", "cache_key"), ("expose", "exposure_key")):
        if unique in records:
            once = records.assign(_t=timings.map(lambda t: t.get(kind))).dropna(subset=[unique, "_t"])
            once = once.drop_duplicates(subset=unique)
            if len(once):
                out[kind] = float(once["_t"].mean())
    for kind in ("defend", "evaluate", "diagnostics"):
        values = [t[kind] for t in timings if kind in t]
        if values:
            out[kind] = float(np.mean(values))
    return out


def project_training(grid: Any, train_split: int, images_per_second: float, jobs: int) -> dict[str, Any]:
    """Victim-training hours of image ``grid`` (its training split holds ``train_split`` samples) at
    ``images_per_second`` per worker and ``jobs`` workers."""
    models = len(grid.models())
    rest = train_split - grid.dataset.defense_size
    train_size = min(grid.dataset.train_subset or rest, rest)
    seconds = models * grid.recipe.epochs * train_size / images_per_second
    return {"models": models, "epochs": grid.recipe.epochs, "train_images": train_size,
            "one_worker_hours": seconds / 3600, "jobs": jobs, "hours_at_jobs": seconds / 3600 / jobs}
