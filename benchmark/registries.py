"""The project's registries. Built-in entries live in the modules listed here and are imported
on first lookup, so ``ebyd-bench ls`` stays fast and a plugin never pays for unused methods."""

from __future__ import annotations

from benchmark.registry import Registry

ATTACKS: Registry = Registry("attacks", builtin_modules=["attacks_registry.image"])
EXPOSURES: Registry = Registry("exposures", builtin_modules=["benchmark.exposures"])
DEFENSES: Registry = Registry("defenses", builtin_modules=["benchmark.defenses"])
MODELS: Registry = Registry("models", builtin_modules=["benchmark.models.resnet_cifar"])
DATASETS: Registry = Registry("datasets", builtin_modules=["adapters.torchvision_data"])

ALL = {r.kind: r for r in (ATTACKS, EXPOSURES, DEFENSES, MODELS, DATASETS)}
