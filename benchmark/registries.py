"""The project's registries. Built-in entries live in the modules listed here and are imported
on first lookup, so ``ebyd-bench ls`` stays fast and a plugin never pays for unused methods."""

from __future__ import annotations

from benchmark.registry import Registry

ATTACKS: Registry = Registry("attacks", builtin_modules=["attacks_registry.image", "attacks_registry.text"])
EXPOSURES: Registry = Registry("exposures", builtin_modules=["benchmark.exposures", "benchmark.text"])
DEFENSES: Registry = Registry("defenses", builtin_modules=["benchmark.defenses", "benchmark.text"])
MODELS: Registry = Registry("models", builtin_modules=["benchmark.models.resnet_cifar", "adapters.transformers_models"])
DATASETS: Registry = Registry("datasets", builtin_modules=["adapters.torchvision_data", "adapters.text_data"])

ALL = {r.kind: r for r in (ATTACKS, EXPOSURES, DEFENSES, MODELS, DATASETS)}
