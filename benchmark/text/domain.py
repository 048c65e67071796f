"""Which domain a grid is in, and that every method of it belongs there.

A dataset loader, model factory or method with ``domain = "text"`` is a text one; anything without
the attribute is an image one (every pre-existing image method). ``none`` fits both domains. The
config validator and :class:`ebyd_bench.benchmark.domains.text.TextGridRun` call :func:`check_domains`, so a
mismatch (``rp`` in a text grid, ``badnet_rw`` on CIFAR-10) fails before anything runs.
"""

from __future__ import annotations

from ebyd_bench.benchmark.grid.config import GridConfig, MethodSpec
from ebyd_bench.benchmark.errors import ConfigError
from ebyd_bench.benchmark.registries import ATTACKS, DATASETS, DEFENSES, EXPOSURES, MODELS


def dataset_domain(name: str) -> str:
    """``"text"`` for a registered text dataset, ``"image"`` otherwise."""
    return getattr(DATASETS.get(name), "domain", "image")


def check_domains(cfg: GridConfig) -> None:
    """Every attack, exposure, defense and the model must belong to the dataset's domain ("none" fits both).

    Methods without a ``domain`` attribute are image methods."""
    domain = dataset_domain(cfg.dataset.name)
    groups = (("model", MODELS, [MethodSpec(name=cfg.model.name)]), ("attack", ATTACKS, cfg.attacks),
              ("exposure", EXPOSURES, cfg.exposures), ("defense", DEFENSES, cfg.defenses))
    for kind, registry, specs in groups:
        for spec in specs:
            if spec.name == "none":
                continue
            found = getattr(registry.get(spec.name), "domain", "image")
            if found != domain:
                fitting = [n for n in registry.names() if getattr(registry.get(n), "domain", "image") == domain]
                raise ConfigError(f"{kind} '{spec.name}' is for {found} data but dataset '{cfg.dataset.name}' is "
                                  f"{domain}; {domain} {kind}s: {', '.join(fitting)}")
