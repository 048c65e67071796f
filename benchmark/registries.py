"""The project's registries. Built-in entries live in the modules listed here and are imported
on first lookup, so ``ebyd-bench ls`` stays fast and a plugin never pays for unused methods."""

from __future__ import annotations

from ebyd_bench.benchmark.registry import Registry

ATTACKS: Registry = Registry("attacks", builtin_modules=["ebyd_bench.attacks_registry.image", "ebyd_bench.attacks_registry.text"])
EXPOSURES: Registry = Registry("exposures", builtin_modules=["ebyd_bench.benchmark.exposures", "ebyd_bench.benchmark.text"])
DEFENSES: Registry = Registry("defenses", builtin_modules=["ebyd_bench.benchmark.defenses", "ebyd_bench.benchmark.text"])
MODELS: Registry = Registry("models", builtin_modules=["ebyd_bench.benchmark.models.resnet_cifar", "ebyd_bench.adapters.transformers_models"])
DATASETS: Registry = Registry("datasets", builtin_modules=["ebyd_bench.adapters.torchvision_data", "ebyd_bench.adapters.text_data"])

#: text-attack backends other than the native one (``backend: openbackdoor``): objects with
#: ``installed()``, ``install_hint``, ``poison_train``, ``poison_test`` and ``train``
TEXT_BACKENDS: Registry = Registry("text_backends", builtin_modules=["ebyd_bench.adapters.openbackdoor"])
#: one per modality: what a grid on a dataset of that domain needs besides the domain-free runner
DOMAINS: Registry = Registry("domains", builtin_modules=["ebyd_bench.benchmark.domains.image",
                                                        "ebyd_bench.benchmark.domains.text"])

ALL = {r.kind: r for r in (ATTACKS, EXPOSURES, DEFENSES, MODELS, DATASETS)}
