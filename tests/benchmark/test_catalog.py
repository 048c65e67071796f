"""The catalog: current, equal to the live registries, and enough to refuse a bad config without torch."""

import subprocess
import sys

import pytest

from ebyd_bench.benchmark import catalog, catalog_build
from ebyd_bench.benchmark.grid.config import check_config
from ebyd_bench.benchmark.errors import ConfigError

REGISTRIES = catalog_build.REGISTRIES


def test_the_checked_in_catalog_is_current():
    assert catalog_build.main(["--check"]) == 0, "run: python -m ebyd_bench.benchmark.catalog_build"


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_catalog_entry_equals_its_live_description(kind):
    registry = REGISTRIES[kind]
    names = catalog.catalog_names(kind)
    assert names is not None and set(names) == {n for n in registry.names() if registry.source(n) == "builtin"}
    for name in names:
        live = catalog.describe_live(kind, name, registry.get(name))
        stored = catalog.describe(registry, name)
        assert stored.params.keys() == live.params.keys(), name
        for key, param in live.params.items():
            assert stored.params[key].type == param.type and stored.params[key].required == param.required, (name, key)
            assert stored.params[key].default == catalog._plain(param.default), (name, key)
        assert (stored.domain, stored.category, stored.num_classes, stored.train_size, stored.summary) == \
               (live.domain, live.category, live.num_classes, live.train_size, live.summary), name


def test_a_stale_catalog_is_slow_never_wrong(monkeypatch):
    """With the digest not matching, every lookup describes the live objects and the same checks hold."""
    bad = {"name": "x", "attacks": [{"name": "wanet", "s": -1}]}
    with pytest.raises(ConfigError) as current:
        check_config(bad)
    monkeypatch.setattr(catalog, "_current_catalog", lambda: None)
    assert catalog.catalog_names("attacks") is None
    with pytest.raises(ConfigError) as stale:
        check_config(bad)
    assert str(stale.value) == str(current.value)
    check_config({"name": "x", "attacks": ["badnets", {"name": "wanet", "s": 4.0}], "defenses": ["none", "rp"]})


def test_an_annotation_outside_the_shared_types_is_refused_when_building():
    desc = catalog.Description("m", params={"x": catalog.Param(int)})
    with pytest.raises(ValueError, match="does not name a type"):
        catalog.to_json(desc, {"x": "MyLocalInt"})


PROBE = """
import sys
from ebyd_bench.cli import main
rc = main(sys.argv[1:])
print('torch' in sys.modules, rc)
"""


@pytest.mark.parametrize("argv", [
    ["run", "{bad}", "--out", "{out}"],
    ["run", "{bad}", "--out", "{out}", "--set", "attacks=[wanett]"],
    ["run", "{bad}", "--out", "{out}", "--set", "defenses=[{{name: rp, threshold: 5}}]"],
    ["ls", "attacks"],
    ["ls", "defenses"],
])
def test_refusals_and_listings_do_not_import_torch(tmp_path, argv):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nattacks: [{name: wanet, s: -1}]\n")
    args = [a.format(bad=bad, out=tmp_path / "out") for a in argv]
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["False", "2" if argv[0] == "run" else "0"], out.stdout + out.stderr
    assert not (tmp_path / "out").exists()


def test_help_does_not_import_torch():
    probe = "import sys\nfrom ebyd_bench.cli import _parser\n_parser().format_help()\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
