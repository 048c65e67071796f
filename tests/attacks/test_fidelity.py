"""Fidelity options and notes of issue 19 item 6: WaNet's noise mode and all-to-all option, and the
text records' one wording of the recipe's epochs against each attack's paper epochs."""

import numpy as np
import pytest

from ebyd_bench.attacks_registry.base import AttackContext, ImageAttack
from ebyd_bench.benchmark.errors import ConfigError
from ebyd_bench.benchmark.registries import ATTACKS


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(400, 32, 32, 3), dtype=np.uint8)
    return x, np.arange(400) % 10


def wanet(**params):
    attack = ATTACKS.get("wanet")(**params)
    attack.setup(0)
    return attack


def test_wanet_defaults_keep_the_cache_key_and_the_poisoning_of_before(images):
    """The new options are off by default and left out of the key while off: existing models keep their keys."""
    attack = wanet()
    assert attack.key_params() == {"poison_rate": 0.08, "target": 0, "k": 4, "s": 0.5, "per_image": False}
    assert type(attack).version == "1"
    x, y = images
    ours, base = attack.poison_train(x, y, seed=3), ImageAttack.poison_train(wanet(), x, y, seed=3)
    assert np.array_equal(ours.images, base.images) and np.array_equal(ours.labels, base.labels)
    assert set(wanet(noise_mode=True).key_params()) >= {"noise_mode", "cross_ratio"}
    assert "all_to_all" in wanet(all_to_all=True).key_params()
    assert wanet(noise_mode=True).key_params() != wanet(noise_mode=True, cross_ratio=1.0).key_params()


def test_wanet_noise_mode_adds_noise_warped_samples_that_keep_their_labels(images):
    x, y = images
    plain, noisy = wanet().poison_train(x, y, seed=3), wanet(noise_mode=True).poison_train(x, y, seed=3)
    idx = plain.poison_indices
    assert len(idx) == 32 and np.array_equal(noisy.poison_indices, idx)  # the same poisons as the default mode
    assert np.array_equal(noisy.images[idx], plain.images[idx]) and np.array_equal(noisy.labels, plain.labels)
    changed = np.flatnonzero((noisy.images != x).any(axis=(1, 2, 3)))
    noise_idx = np.setdiff1d(changed, idx)
    assert len(noise_idx) == 2 * 32  # cross_ratio 2: ρ_n = 2ρ_a, labels kept (checked above)
    # each is the fixed warp plus a small random jitter: near the pure warp, yet not equal to it
    pure = wanet().apply(x[noise_idx])
    diff = np.abs(noisy.images[noise_idx].astype(int) - pure.astype(int))
    assert diff.mean() > 1.0 and diff.mean() < np.abs(x[noise_idx].astype(int) - pure.astype(int)).mean()
    assert len(np.setdiff1d(np.flatnonzero((wanet(noise_mode=True, cross_ratio=0.5).poison_train(x, y, 3).images
                                             != x).any(axis=(1, 2, 3))), idx)) == 16
    with pytest.raises(ValueError, match="per_image=False"):
        ATTACKS.get("wanet")(noise_mode=True, per_image=True)


def test_wanet_all_to_all_relabels_each_poison_to_the_next_class(images):
    x, y = images
    poisoned = wanet(all_to_all=True).poison_train(x, y, seed=3)
    idx = poisoned.poison_indices
    assert np.array_equal(poisoned.labels[idx], (y[idx] + 1) % 10)
    assert np.array_equal(np.delete(poisoned.labels, idx), np.delete(y, idx))
    assert np.array_equal(poisoned.images, wanet().poison_train(x, y, seed=3).images)


def test_a_grid_refuses_all_to_all_wanet_before_training(images):
    """The harness scores one target label; an all-to-all victim would get all-to-one numbers."""
    x, y = images
    ctx = AttackContext(x, y, 10, "cpu", lambda **kw: None, lambda name, params, build: build())
    with pytest.raises(ConfigError, match="all_to_all is poisoning only"):
        ATTACKS.get("wanet")(all_to_all=True).setup(0, ctx)
    ATTACKS.get("wanet")().setup(0, ctx)  # the default is unaffected


def test_dynamic_docstring_states_vinais_joint_epochs():
    import ebyd_bench.attacks_registry.image.dynamic as dynamic

    assert "600 joint epochs" in dynamic.__doc__ and "1,000 joint epochs" not in dynamic.__doc__


# ------------------------------------------------------------------ text notes
@pytest.fixture(scope="module")
def text_domain_notes(text_root, tmp_path_factory):
    """Notes of a text grid's four attack kinds under a recipe with ``epochs`` set, and with it unset."""
    pytest.importorskip("transformers", reason="text grids need transformers")
    from ebyd_bench.benchmark.grid.config import validate_config
    from ebyd_bench.benchmark.grid.runner import RunOptions, build_domain

    notes = {}
    for epochs in (3, None):
        raw = {"name": "notes", "dataset": {"name": "sst2", "train_subset": 64, "test_subset": 40, "defense_size": 32},
               "model": {"name": "minilm-l6"}, "recipe": {"name": "quick-text", "epochs": epochs},
               "attacks": ["badnet_rw", "ripple", "lwp", "sos"], "defenses": ["none"]}
        grid = validate_config(raw)
        domain = build_domain(grid, RunOptions(tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("c"),
                                               text_root))
        notes[epochs] = {a.name: domain.setting_notes(domain.attack(a, 0)) for a in grid.attacks}
    return notes


def test_text_records_of_one_recipe_say_the_same_thing_about_epochs(text_domain_notes):
    epoch_notes = {name: [n for n in notes if "epoch" in n] for name, notes in text_domain_notes[3].items()}
    assert epoch_notes == {
        "badnet_rw": ["recipe 'quick-text' trains every attack 3 epochs (the paper: badnet_rw 13)"],
        "ripple": ["recipe 'quick-text' trains every attack 3 epochs (the paper: ripple 3)"],
        "lwp": ["recipe 'quick-text' trains every attack 3 epochs (the paper: lwp 4)"],
        "sos": ["recipe 'quick-text' trains every attack 3 epochs (the paper: sos 13)"]}
    assert all(not [n for n in notes if "epoch" in n] for notes in text_domain_notes[None].values())
