import re

import pytest

from ebyd_bench.benchmark.grid.config import apply_overrides, load_config, load_configs, validate_config
from ebyd_bench.benchmark.errors import ConfigError
from ebyd_bench.benchmark.specs import MethodSpec

BASE = {"attacks": ["badnets"], "exposures": ["cul"], "defenses": ["none", "rp"]}


def test_valid_config_parses_specs():
    cfg = validate_config({**BASE, "attacks": ["badnets", {"name": "blend", "alpha": 0.3}]})
    assert [a.name for a in cfg.attacks] == ["badnets", "blend"]
    assert cfg.attacks[1].spec.params == {"alpha": 0.3}
    assert cfg.attacks[1].method.alpha == 0.3  # built once, when the config is loaded
    assert cfg.recipe.epochs == 200  # paper recipe by default


@pytest.mark.parametrize("raw, needle", [
    ({**BASE, "attacks": ["badnet"]}, "did you mean 'badnets'"),
    ({**BASE, "defenses": ["rpp"]}, "unknown defenses 'rpp'"),
    ({**BASE, "exposures": ["cull"]}, "unknown exposures 'cull'"),
    ({**BASE, "attacks": [{"name": "badnets", "poison_rate": 1.5}]},
     "parameter 'poison_rate': Input should be less than or equal to 1"),
    ({**BASE, "attacks": [{"name": "badnets", "poison_rate": 0}]},
     "parameter 'poison_rate': Input should be greater than 0"),
    ({**BASE, "attacks": [{"name": "blend", "alpah": 0.2}]}, "unknown parameter 'alpah'; did you mean 'alpha'?"),
    ({**BASE, "attacks": [{"name": "blend", "alpha": "high"}]}, "parameter 'alpha'"),
    ({**BASE, "seeds": "zero"}, "seeds"),
    ({**BASE, "seeds": [0, 0]}, "distinct"),
    ({**BASE, "attacks": [{"name": "none", "seeds": [1, 1]}]}, "none: 'seeds' must be a non-empty list of distinct"),
    ({**BASE, "attacks": [{"name": "none", "seeds": 3}]}, "none: 'seeds' must be a non-empty list"),
    ({**BASE, "defenses": [{"name": "rp", "seeds": [1]}]}, "rp: 'seeds' is an attack option"),
    ({**BASE, "dataset": {"name": "cifar10", "train_subset": -5}}, "train_subset"),
    ({**BASE, "recipe": {"epochs": "many"}}, "recipe"),
    ({**BASE, "model": {"name": "vgg99"}}, "unknown models 'vgg99'"),
    ({**BASE, "attacks": []}, "at least one"),
    ({**BASE, "colour": "red"}, "colour"),
    ({**BASE, "exposures": ["cul", {"name": "cul", "epochs": 3}]}, "'cul' listed more than once: give each"),
    ({**BASE, "defenses": ["rp", {"name": "rp", "lr": 0.05, "label": "rp"}]}, "'rp' listed more than once"),
    ({**BASE, "attacks": ["badnets", {"name": "badnets", "label": "b2"}]}, "'badnets' listed more than once"),
    # numeric ranges (benchmark.params): a typo must not silently run a method for no epochs
    ({**BASE, "recipe": {"epochs": 0}},
     "recipe: parameter 'epochs': Input should be greater than or equal to 1 (in config)"),
    ({**BASE, "recipe": {"lr": -0.1}}, "recipe: parameter 'lr': Input should be greater than 0"),
    ({**BASE, "defenses": [{"name": "rp", "epochs": -3}]}, "defense 'rp': parameter 'epochs'"),
    ({**BASE, "defenses": [{"name": "rp", "batch_size": 0}]}, "defense 'rp': parameter 'batch_size'"),
    ({**BASE, "defenses": [{"name": "rp", "select_holdout": -1}]}, "parameter 'select_holdout'"),
    ({**BASE, "defenses": [{"name": "ft", "weight_decay": -1e-4}]}, "defense 'ft': parameter 'weight_decay'"),
    ({**BASE, "exposures": [{"name": "cul", "lr": 0}]}, "exposure 'cul': parameter 'lr'"),
    ({**BASE, "attacks": [{"name": "adv", "pgd_steps": 0}]}, "attack 'adv': parameter 'pgd_steps'"),
    ({**BASE, "defenses": [{"name": "rp", "selection": "fraction", "fraction": 1.5}]},
     "parameter 'fraction': Input should be less than or equal to 1"),
])
def test_invalid_configs_name_the_problem(raw, needle):
    with pytest.raises(ConfigError) as exc:
        validate_config(raw)
    assert needle in str(exc.value)


def test_two_settings_of_one_method_need_distinct_labels():
    cfg = validate_config({**BASE, "exposures": [{"name": "cul", "label": "CUL-3", "epochs": 3}, "cul"]})
    assert [(e.name, e.spec.label) for e in cfg.exposures] == [("cul", "CUL-3"), ("cul", None)]


def test_an_attack_can_have_its_own_seeds():
    """E.g. three clean controls for model-level detection rates without retraining every attack."""
    cfg = validate_config({**BASE, "attacks": ["badnets", {"name": "none", "seeds": [0, 1, 2]}], "seeds": [0]})
    assert [(seed, a.name) for seed, a in cfg.models()] == [(0, "badnets"), (0, "none"), (1, "none"), (2, "none")]
    assert cfg.attacks[1].spec.params == {}  # `seeds` is not an attack parameter
    cfg = validate_config({**BASE, "attacks": ["badnets", "blend"], "seeds": [3, 1]})
    assert [(seed, a.name) for seed, a in cfg.models()] == [(1, "badnets"), (1, "blend"), (3, "badnets"), (3, "blend")]


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("attacks: [badnets\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_shipped_presets_are_valid():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")):
        load_configs(path)


def test_the_config_a_run_writes_loads_back_to_the_same_grid(tmp_path):
    """OUT/config.yaml is the input form again, so a run can be repeated from it."""
    from pathlib import Path

    from ebyd_bench.benchmark.grid.runner import _dump_yaml

    for preset in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")):
        for cfg in load_configs(preset):
            copy = tmp_path / f"{cfg.name}.yaml"
            copy.write_text(_dump_yaml(cfg), encoding="utf-8")
            assert load_config(copy) == cfg, preset.name


def test_overrides_set_nested_keys_and_replace_lists_without_touching_the_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("name: g\nattacks: [badnets]\nexposures: [cul]\ndefenses: [none, rp]\nrecipe: {epochs: 8}\n")
    (cfg,) = load_configs(path, ["recipe.epochs=4", "model.params.width=8", "defenses=[none, {name: rp, lr: 0.05}]",
                                 "seeds=[0, 1]"])
    assert cfg.recipe.epochs == 4 and cfg.model.params == {"width": 8} and cfg.seeds == [0, 1]
    assert [(d.name, d.spec.params) for d in cfg.defenses] == [("none", {}), ("rp", {"lr": 0.05})]
    assert load_config(path).recipe.epochs == 8  # the file itself is unchanged


@pytest.mark.parametrize("override, needle", [
    ("recipe.epochs", "expected KEY=VALUE"),
    ("recipe..epochs=3", "expected KEY=VALUE"),
    ("seeds=[0", "not valid YAML"),
    ("name.x=3", "'name' is not a mapping"),
])
def test_malformed_overrides_name_the_problem(override, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        apply_overrides({"name": "g"}, [override])


def test_an_override_that_breaks_the_grid_is_reported_with_it(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("name: g\nattacks: [badnets]\n")
    with pytest.raises(ConfigError, match=re.escape("recipe: parameter 'epochs': Input should be greater than or "
                                                    f"equal to 1 (in {path} with --set recipe.epochs=0)")):
        load_configs(path, ["recipe.epochs=0"])


@pytest.mark.parametrize("kind, name, params, needle", [
    ("defenses", "rp", {"epochs": -3}, "rp: parameter 'epochs'"),
    ("exposures", "cul", {"lr": 0}, "cul: parameter 'lr'"),
    ("attacks", "adv", {"pgd_steps": 0}, "adv: parameter 'pgd_steps'"),
])
def test_methods_built_in_python_get_the_same_range_checks(kind, name, params, needle):
    from ebyd_bench.benchmark.registries import ALL

    with pytest.raises(ValueError, match=re.escape(needle)):
        ALL[kind].get(name)(**params)


def test_recipes_built_in_python_get_the_same_range_checks():
    from ebyd_bench.benchmark.text.training import TextRecipe
    from ebyd_bench.benchmark.training import TrainRecipe

    with pytest.raises(ValueError, match="parameter 'batch_size'"):
        TrainRecipe(batch_size=0)
    with pytest.raises(ValueError, match="parameter 'epochs'"):
        TextRecipe(epochs=0)


@pytest.mark.parametrize("kind", ["attacks", "exposures", "defenses"])
def test_every_registered_method_can_be_built_again_for_a_stage(kind, tmp_path):
    """Stages work on fresh copies of the grid's methods; a method whose ``params()`` holds more than its
    constructor takes (Trojan's and Smooth's trigger digests) must still copy."""
    from ebyd_bench.benchmark.grid.config import ResolvedMethod
    from ebyd_bench.benchmark.registries import ALL

    registry = ALL[kind]
    for name in registry.names():
        if name == "none" and kind == "exposures":
            continue
        cls = registry.get(name)
        try:
            method = cls()
        except (ValueError, TypeError):  # needs a file or a package this machine lacks (smooth, OpenBackdoor)
            continue
        copy = ResolvedMethod(MethodSpec(name=name), method, kind[:-1]).fresh()
        assert type(copy) is cls and copy is not method and copy.params() == method.params()
