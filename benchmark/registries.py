"""The project's registries. Built-in entries live in the modules listed here and are imported on
first lookup of an entry; their names (and parameters, :mod:`~ebyd_bench.benchmark.catalog`) come from
the catalog, so ``ebyd-bench ls`` and config validation never import torch."""

from __future__ import annotations

from functools import partial

from ebyd_bench.benchmark.catalog import catalog_names
from ebyd_bench.benchmark.registry import Registry


def _registry(kind: str, *modules: str) -> Registry:
    return Registry(kind, builtin_modules=list(modules), index=partial(catalog_names, kind))


ATTACKS = _registry("attacks", "ebyd_bench.attacks_registry.image", "ebyd_bench.attacks_registry.text")
EXPOSURES = _registry("exposures", "ebyd_bench.benchmark.exposures", "ebyd_bench.benchmark.text")
DEFENSES = _registry("defenses", "ebyd_bench.benchmark.defenses", "ebyd_bench.benchmark.text")
MODELS = _registry("models", "ebyd_bench.benchmark.models.resnet_cifar", "ebyd_bench.adapters.transformers_models")
DATASETS = _registry("datasets", "ebyd_bench.adapters.torchvision_data", "ebyd_bench.adapters.text_data")
#: text-attack backends other than the native one (``backend: openbackdoor``): objects with
#: ``installed()``, ``install_hint``, ``poison_train``, ``poison_test`` and ``train``
TEXT_BACKENDS = _registry("text_backends", "ebyd_bench.adapters.openbackdoor")
#: one per modality: what a grid on a dataset of that domain needs besides the domain-free runner
DOMAINS = _registry("domains", "ebyd_bench.benchmark.domains.image", "ebyd_bench.benchmark.domains.text")

ALL = {r.kind: r for r in (ATTACKS, EXPOSURES, DEFENSES, MODELS, DATASETS)}
