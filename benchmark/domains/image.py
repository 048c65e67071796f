"""Image grids (CIFAR-10 and other image datasets): uint8 NHWC arrays, CIFAR ResNets, augmented SGD.

* split: ``defense_size`` clean images (``D_d``) drawn from the training split with the seed; the
  victim trains on the rest (or ``train_subset`` of it), and on ``D_d`` too only in the
  ``defense_in_training`` ablation;
* victims: the registered model factory, channels-last on the device, trained by
  :func:`~ebyd_bench.benchmark.training.train_classifier` under a
  :class:`~ebyd_bench.benchmark.training.TrainRecipe`;
* evaluation: CA on the clean test subset, ASR on its triggered non-target images, and the
  prior-matched CA/ASR (:func:`~ebyd_bench.benchmark.metrics.cell_metrics`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from ebyd_bench.attacks_registry.base import AttackContext, ImageAttack
from ebyd_bench.benchmark.grid.config import ResolvedMethod
from ebyd_bench.benchmark.grid.domain import Domain, Monitor
from ebyd_bench.benchmark.methods import DefenseData, MethodContext
from ebyd_bench.benchmark.metrics import cell_metrics
from ebyd_bench.benchmark.registries import DOMAINS
from ebyd_bench.benchmark.training import TrainRecipe, native_bf16, predict_logits, resolve_precision, train_classifier

log = logging.getLogger(__name__)


@DOMAINS.register("image")
class ImageDomain(Domain):
    """Image data, CIFAR ResNet victims, pixel triggers."""

    recipe_type = TrainRecipe
    unit = "images"

    def resolve_recipe(self, recipe: TrainRecipe) -> TrainRecipe:
        resolved = resolve_precision(recipe, self.device)
        warn_if_slow_precision(resolved.precision, self.device)
        return resolved

    # ----------------------------------------------------------------- data and models
    def defense_data(self, seed: int) -> DefenseData:
        idx = self.split(seed)[0]
        return DefenseData(self.data.train.images[idx], self.data.train.labels[idx], self.data.num_classes)

    def attack_context(self, attack: ImageAttack, seed: int) -> AttackContext:
        train_idx = self.split(seed)[1]
        ds, model = self.grid.dataset, self.grid.config.model
        base = {"dataset": self.data.digest, "train_subset": ds.train_subset, "defense_size": ds.defense_size,
                "seed": seed, "attack": attack.name, "version": attack.version,
                "model": {"name": model.name, "params": model.params}}
        return AttackContext(self.data.train.images[train_idx], self.data.train.labels[train_idx],
                             self.data.num_classes, self.device, self.new_model, self.part_cache("attack_part", base))

    def new_model(self, seed: int | None = None, **overrides: Any) -> nn.Module:
        if seed is not None:
            torch.manual_seed(seed)
        model = self.grid.model(self.data.num_classes, **overrides)
        return model.to(self.device).to(memory_format=torch.channels_last)

    def load_model(self, tensors: dict[str, torch.Tensor]) -> nn.Module:
        model = self.new_model()
        model.load_state_dict(tensors)
        return model.eval()

    def method_context(self, seed: int, monitor: Monitor | None = None) -> MethodContext:
        ctx = MethodContext(self.defense_data(seed), seed, self.device, model_factory=self.new_model)
        if monitor is not None:
            ctx.monitor = monitor
        return ctx

    def train_poisoned(self, attack: ResolvedMethod, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        instance = self.attack(attack, seed)
        train_idx = self.split(seed)[1]
        poisoned = instance.poison_train(self.data.train.images[train_idx], self.data.train.labels[train_idx], seed)
        images, labels = poisoned.images, poisoned.labels
        if self.grid.dataset.defense_in_training:  # ablation: D_d joins training, never poisoned
            dd = self.defense_data(seed)
            images, labels = np.concatenate([images, dd.images]), np.concatenate([labels, dd.labels])
        model = train_classifier(self.new_model(seed), images, labels, self.recipe, seed,
                                 self.device, desc=f"train {attack.name}")
        return model, {"poison_count": int(len(poisoned.poison_indices)), "train_size": int(len(labels))}

    # ----------------------------------------------------------------- evaluation (harness only)
    def poison_test(self, attack: ImageAttack, idx: np.ndarray, full: bool) -> tuple:
        x, y = self.data.test.images[idx], self.data.test.labels[idx]
        return (x, y, *attack.poison_test(x, y))

    def evaluate(self, model: nn.Module, attack: ImageAttack, limit: int | None = None) -> dict[str, float]:
        x, y, px, py = self.test_set(attack, limit)
        triggered = None if attack.is_clean else predict_logits(model, px, self.device).numpy()
        return cell_metrics(predict_logits(model, x, self.device).numpy(), y, triggered, py, attack.target)

    def filter_inputs(self, attack: ImageAttack, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, _, px, _ = self.test_set(attack)
        return x[:n], px[:n]

    def setting_notes(self, attack: ImageAttack) -> list[str]:
        notes = []
        model, recipe = self.grid.config.model, self.recipe
        if model.name != "resnet18" or model.params.get("width", 64) != 64:
            notes.append(f"victim {model.name} {model.params or ''} is smaller than the paper's ResNet-18"
                         .replace("  ", " "))
        if asdict(recipe) != asdict(TrainRecipe()):
            notes.append(f"recipe '{recipe.name}' ({recipe.epochs} epochs, {recipe.schedule}) "
                         f"instead of the paper's 200 epochs")
        if self.grid.dataset.defense_in_training:
            notes.append("D_d was also part of victim training (ablation; by default it is held out)")
        if recipe.precision != "fp32":
            notes.append(f"victims trained under {recipe.precision} autocast")
        if recipe.compile != "off":
            notes.append(f"victims trained with torch.compile (mode {recipe.compile})")
        return notes + self.subset_and_attack_notes(attack)


def warn_if_slow_precision(precision: str, device: str) -> None:
    """bf16 autocast pays off on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX); elsewhere
    oneDNN emulates it and a training step of the narrow ResNet-18 took 9x longer than fp32 (AVX2)."""
    if precision == "bf16" and not native_bf16(device):
        log.warning("recipe precision bf16 on %s (CPU capability %s) without native bf16: expect training to "
                    "be several times slower than fp32 (measured 9x on AVX2); `precision: auto` picks fp32 "
                    "here. The precision is part of the cache key, so changing it retrains the models",
                    device, torch.backends.cpu.get_cpu_capability())
