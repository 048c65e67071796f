"""The modality-specific half of a grid run: one :class:`Domain` subclass per modality.

The runner (:mod:`ebyd_bench.benchmark.grid.runner`) plans stages, computes keys, caches artifacts
and writes records without knowing what a sample is. Everything that does (loading the dataset,
the defense/victim split, victims, poisoning, training, evaluation, the notes that say how a
setting deviates from the paper's) lives in a domain, registered in
:data:`~ebyd_bench.benchmark.registries.DOMAINS` under the name that dataset loaders carry in their
``domain`` attribute (``"image"`` when absent). A third modality is one new domain module.

Each process that executes stages builds one domain, so the dataset is loaded once per worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from ebyd_bench.benchmark.cache import ArtifactCache, key_stable, stable_hash
from ebyd_bench.benchmark.grid.config import Grid, GridConfig, ResolvedMethod
from ebyd_bench.benchmark.methods import MethodContext
from ebyd_bench.benchmark.registries import DATASETS

#: the evaluated test subset is drawn with this seed: fixed, so seeds are compared on equal data
TEST_SUBSET_SEED = 12345
Monitor = Callable[[int, nn.Module], None]


class Domain(ABC):
    """Data, victims, poisoning, training and evaluation of one modality, for one grid."""

    #: the recipe dataclass a grid's ``recipe:`` mapping is built into
    recipe_type: ClassVar[type]
    #: what a sample is called in the deviation notes ("images", "sentences")
    unit: ClassVar[str]

    def __init__(self, grid: Grid, data_root: Path, cache: ArtifactCache, device: str) -> None:
        self.grid, self.data_root, self.cache, self.device = grid, Path(data_root), cache, device
        loader = DATASETS.get(grid.dataset.name)
        self.data = loader(data_root, cache_dir=cache.root, download=grid.dataset.download)
        self.recipe = self.resolve_recipe(grid.recipe)
        n_test = len(self.data.test)
        size = min(grid.dataset.test_subset or n_test, n_test)
        # In random order: the exposure trace and the input-detection AUROCs use a prefix of it, which is
        # then a uniform sample rather than the first classes of a class-sorted folder.
        self.test_idx = np.random.default_rng(TEST_SUBSET_SEED).permutation(n_test)[:size]
        self._attacks: dict[tuple[str, int], Any] = {}
        #: (id of the attack instance, limit) → (the instance, its test set); the instance is kept so that
        #: its id cannot be reused while the entry exists
        self._test_sets: dict[tuple[int, int | None], tuple[Any, Any]] = {}

    # ----------------------------------------------------------------- configuration
    @classmethod
    def check_config(cls, cfg: GridConfig) -> None:
        """Refuse settings this domain cannot run (raise ConfigError); called when a grid is loaded."""

    def resolve_recipe(self, recipe: Any) -> Any:
        """The recipe as this device runs it (e.g. ``precision: auto`` resolved)."""
        return recipe

    # ----------------------------------------------------------------- data shared by every domain
    def split(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(defense indices, victim-training indices) into the training split, drawn from the seed."""
        n = len(self.data.train)
        ds = self.grid.dataset
        if ds.defense_size >= n:
            raise ValueError(f"defense_size {ds.defense_size} leaves no training data out of {n}")
        perm = np.random.default_rng([seed, 7]).permutation(n)
        rest = perm[ds.defense_size:]
        return np.sort(perm[:ds.defense_size]), np.sort(rest[:ds.train_subset] if ds.train_subset else rest)

    def attack(self, attack: ResolvedMethod, seed: int) -> Any:
        """The grid's attack set up for ``seed`` (its trained parts come from the cache), once per run."""
        memo = (attack.name, seed)
        if memo not in self._attacks:
            instance = attack.fresh()
            instance.setup(seed, self.attack_context(instance, seed))
            self._attacks[memo] = instance
        return self._attacks[memo]

    def part_cache(self, kind: str, base: dict[str, Any]) -> Callable:
        """``artifact(name, params, build)``: tensors an attack trains, cached under ``base`` + name + params."""

        def artifact(name: str, params: dict, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
            key = stable_hash({"kind": kind, "base": base, "name": name, "params": params})
            with self.cache.lock("attack_parts", key):
                art = self.cache.load("attack_parts", key)
                if art is not None:
                    return art.tensors
                tensors = build()
                self.cache.save("attack_parts", key, tensors, {"base": base, "name": name, "params": params})
                return tensors

        return artifact

    def test_set(self, attack: Any, limit: int | None = None) -> Any:
        """The clean and triggered evaluated test subset (its first ``limit`` samples), built once per
        attack instance.

        Memoised by the instance, not by its name and parameters: :meth:`attack` sets up one instance
        per seed, and the trigger of Blend, WaNet or Dynamic is drawn from that seed, so two seeds of
        one attack with equal parameters have different triggered test sets."""
        memo = (id(attack), limit)
        if memo not in self._test_sets:
            idx = self.test_idx[:limit] if limit else self.test_idx
            self._test_sets[memo] = (attack, self.poison_test(attack, idx, full=not limit))
        return self._test_sets[memo][1]

    # ----------------------------------------------------------------- keys
    def dataset_key(self) -> dict[str, Any]:
        """What about the data determines a poisoned model (part of its cache key)."""
        ds = self.grid.dataset
        return key_stable({"name": self.data.name, "digest": self.data.digest, "train_subset": ds.train_subset,
                           "defense_size": ds.defense_size, "defense_in_training": ds.defense_in_training})

    def model_key_extras(self, attack: ResolvedMethod) -> dict[str, Any]:
        """Domain-specific entries of a poisoned model's key (e.g. the trigger files a text attack reads)."""
        return {}

    # ----------------------------------------------------------------- notes
    def subset_and_attack_notes(self, attack: Any) -> list[str]:
        """Notes shared by every domain: training/test subsets and non-default attack parameters."""
        notes = []
        ds, n_train = self.grid.dataset, len(self.data.train) - self.grid.dataset.defense_size
        if ds.train_subset and ds.train_subset < n_train:
            notes.append(f"victims trained on {ds.train_subset} of {n_train} training {self.unit}")
        if len(self.test_idx) < len(self.data.test):
            notes.append(f"evaluated on {len(self.test_idx)} of {len(self.data.test)} test {self.unit}")
        defaults = type(attack)().params()
        changed = {k: v for k, v in attack.params().items() if defaults.get(k) != v}
        if changed:
            notes.append(f"{attack.name} parameters differ from the reference defaults: "
                         + ", ".join(f"{k}={v} (default {defaults[k]})" for k, v in changed.items()))
        return notes

    # ----------------------------------------------------------------- what each modality provides
    @abstractmethod
    def defense_data(self, seed: int) -> Any:
        """``D_d``: the defender's clean samples for this seed (the only data a method sees)."""

    @abstractmethod
    def attack_context(self, attack: Any, seed: int) -> Any:
        """What an attack's ``setup`` may use: clean victim-training data and a cache for trained parts."""

    @abstractmethod
    def new_model(self, seed: int | None = None, **overrides: Any) -> nn.Module:
        """A fresh victim on the device (seeded when ``seed`` is given)."""

    @abstractmethod
    def load_model(self, tensors: dict[str, torch.Tensor]) -> nn.Module:
        """A victim with a cached state dict, in eval mode."""

    @abstractmethod
    def method_context(self, seed: int, monitor: Monitor | None = None) -> MethodContext:
        """The context an exposure or defense runs in: ``D_d``, the seed, the device, a model factory."""

    @abstractmethod
    def train_poisoned(self, attack: ResolvedMethod, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        """Poison the victim-training split and train a victim on it; also metadata for the cache."""

    @abstractmethod
    def poison_test(self, attack: Any, idx: np.ndarray, full: bool) -> Any:
        """The clean and triggered test samples at ``idx`` (what :meth:`evaluate` scores); ``full`` when
        ``idx`` is the whole evaluated subset rather than a trace prefix."""

    @abstractmethod
    def evaluate(self, model: nn.Module, attack: Any, limit: int | None = None) -> dict[str, float]:
        """Test metrics (``ca``, ``asr``, ...) of ``model`` on the evaluated subset or its first ``limit``."""

    @abstractmethod
    def filter_inputs(self, attack: Any, n: int) -> tuple[Any, Any]:
        """``n`` clean and ``n`` triggered non-target test inputs for scoring an input filter."""

    @abstractmethod
    def setting_notes(self, attack: Any) -> list[str]:
        """Every way this setting deviates from the paper's, printed next to its numbers."""
