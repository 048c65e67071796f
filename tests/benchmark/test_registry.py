import pytest

from ebyd_bench.benchmark.registry import Registry, UnknownNameError
from ebyd_bench.benchmark.registries import ATTACKS, DEFENSES, EXPOSURES, MODELS, DATASETS


def test_decorator_registration_and_lookup():
    reg = Registry("widgets")

    @reg.register("alpha")
    class Alpha:
        pass

    assert reg.get("alpha") is Alpha
    assert Alpha.registry_name == "alpha"
    assert reg.names() == ["alpha"]
    assert reg.source("alpha") == "builtin"


def test_unknown_name_suggests_closest():
    reg = Registry("widgets")
    reg.add("badnets", object())
    reg.add("blend", object())
    with pytest.raises(UnknownNameError) as exc:
        reg.get("badnet")
    assert "did you mean 'badnets'" in str(exc.value)
    assert "unknown widgets 'badnet'" in str(exc.value)


def test_duplicate_registration_is_an_error():
    reg = Registry("widgets")
    reg.add("a", object())
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", object())


def test_lazy_entry_imported_on_first_use():
    reg = Registry("widgets")
    reg.add("join", "os.path:join")
    import os.path

    assert reg.get("join") is os.path.join


def test_entry_point_plugins_are_discovered(monkeypatch):
    from importlib import metadata

    class FakeEP:
        name, value, dist = "plugged", "os.path:basename", None

    monkeypatch.setattr(metadata, "entry_points", lambda group: [FakeEP()] if group == "ebyd_bench.widgets" else [])
    reg = Registry("widgets")
    import os.path

    assert reg.get("plugged") is os.path.basename
    assert reg.source("plugged") == "plugin:unknown"


def test_builtin_registries_list_the_first_methods():
    assert {"badnets", "blend", "wanet"} <= set(ATTACKS.names())
    assert "cul" in EXPOSURES.names()
    assert {"none", "rp"} <= set(DEFENSES.names())
    assert {"resnet18", "resnet18_narrow"} <= set(MODELS.names())
    assert "cifar10" in DATASETS.names()
