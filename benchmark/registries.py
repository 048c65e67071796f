"""The project's registries. Built-in entries live in the modules listed here and are imported
on first lookup, so ``ebyd-bench ls`` stays fast and a plugin never pays for unused methods."""

from __future__ import annotations

from ebyd_bench.benchmark.registry import Registry

ATTACKS: Registry = Registry("attacks", builtin_modules=["ebyd_bench.attacks_registry.image", "ebyd_bench.attacks_registry.text"])
EXPOSURES: Registry = Registry("exposures", builtin_modules=["ebyd_bench.benchmark.exposures", "ebyd_bench.benchmark.text"])
DEFENSES: Registry = Registry("defenses", builtin_modules=["ebyd_bench.benchmark.defenses", "ebyd_bench.benchmark.text"])
MODELS: Registry = Registry("models", builtin_modules=["ebyd_bench.benchmark.models.resnet_cifar", "ebyd_bench.adapters.transformers_models"])
DATASETS: Registry = Registry("datasets", builtin_modules=["ebyd_bench.adapters.torchvision_data", "ebyd_bench.adapters.text_data"])

ALL = {r.kind: r for r in (ATTACKS, EXPOSURES, DEFENSES, MODELS, DATASETS)}
