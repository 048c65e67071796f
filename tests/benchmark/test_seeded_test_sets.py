"""Triggered test sets belong to one seed's attack instance (issue 19 item 5).

The domain sets up one attack instance per seed, and Blend, WaNet and Dynamic draw their trigger from
the seed. The test-set memo was keyed by the attack's name and parameters, so in a grid with two seeds
every later seed was scored on the first seed's triggered images.
"""

import numpy as np
import pytest

from ebyd_bench.benchmark.grid.config import validate_config
from ebyd_bench.benchmark.grid.domain import Domain
from ebyd_bench.benchmark.grid.runner import RunOptions, build_domain
from ebyd_bench.benchmark.registries import ATTACKS

RAW = {"dataset": {"name": "cifar10", "train_subset": 300, "test_subset": 120, "defense_size": 50},
       "model": {"name": "resnet18_narrow", "params": {"width": 8}}, "recipe": {"name": "tiny", "epochs": 1},
       "attacks": ["badnets", "blend", "wanet"], "defenses": ["none"], "seeds": [0, 1]}


@pytest.fixture
def domain(tmp_path, data_root, session_cache, cifar):
    return build_domain(validate_config(RAW), RunOptions(tmp_path, session_cache, data_root))


def _triggered(domain, name: str, seed: int, limit: int | None = None) -> np.ndarray:
    (attack,) = [a for a in domain.grid.attacks if a.name == name]
    return domain.test_set(domain.attack(attack, seed), limit)[2]


@pytest.mark.parametrize("name", ["blend", "wanet"])
def test_seeded_triggers_give_each_seed_its_own_triggered_test_set(domain, name):
    for limit in (None, 40):  # the whole subset and a trace prefix
        first, second = _triggered(domain, name, 0, limit), _triggered(domain, name, 1, limit)
        assert first.shape == second.shape and not np.array_equal(first, second)
        assert _triggered(domain, name, 0, limit) is first  # still built once per instance


def test_a_fixed_trigger_gives_every_seed_the_same_triggered_test_set(domain):
    assert np.array_equal(_triggered(domain, "badnets", 0), _triggered(domain, "badnets", 1))


def test_each_seed_is_scored_on_the_trigger_its_own_seed_draws(domain):
    """What a seed is scored on equals a fresh attack set up with that seed, whatever ran before."""
    x, y = domain.data.test.images[domain.test_idx], domain.data.test.labels[domain.test_idx]
    for seed in (0, 1, 0):
        for name in ("blend", "wanet"):
            fresh = ATTACKS.get(name)()
            fresh.setup(seed)
            assert np.array_equal(_triggered(domain, name, seed), fresh.poison_test(x, y)[0])


@pytest.mark.e2e  # runs a grid
def test_a_two_seed_grid_of_blend_and_wanet_evaluates_each_seed_on_its_own_trigger(run_yaml, monkeypatch):
    """Every evaluation the grid makes (the trained model, the undefended and the defended cell) reads the
    triggered images of the seed its stage runs for."""
    evaluated, wrong = [], []
    original = Domain.test_set

    def spy(self, attack, limit=None):
        result = original(self, attack, limit)
        (seed,) = [s for (name, s), inst in self._attacks.items() if inst is attack]
        fresh = ATTACKS.get(attack.name)(**attack.params())
        fresh.setup(seed)
        idx = self.test_idx[:limit] if limit else self.test_idx
        expected = fresh.poison_test(self.data.test.images[idx], self.data.test.labels[idx])[0]
        evaluated.append((attack.name, seed))
        if not np.array_equal(result[2], expected):
            wrong.append((attack.name, seed, limit))
        return result

    monkeypatch.setattr(Domain, "test_set", spy)
    records, _ = run_yaml("""
name: two-seeds
dataset: {name: cifar10, train_subset: 300, test_subset: 120, defense_size: 50}
model: {name: resnet18_narrow, params: {width: 8}}
recipe: {name: tiny, epochs: 1, schedule: onecycle, batch_size: 64}
attacks: [blend, wanet]
defenses: [none]
seeds: [0, 1]
""")
    assert sorted((r["attack"], r["seed"]) for r in records) == [("blend", 0), ("blend", 1), ("wanet", 0), ("wanet", 1)]
    assert set(evaluated) == {("blend", 0), ("blend", 1), ("wanet", 0), ("wanet", 1)}
    assert wrong == []
