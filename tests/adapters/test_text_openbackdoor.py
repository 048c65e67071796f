"""The OpenBackdoor adapter: the absent-package error, the AdamW shim, config mapping and glue
(with a fake package); the real package's tests run only when it is installed."""

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

import ebyd_bench.attacks_registry.text  # noqa: F401
from ebyd_bench.adapters import openbackdoor as ob
from ebyd_bench.benchmark.registries import ATTACKS

HAS_OB = importlib.util.find_spec("openbackdoor") is not None


def test_absent_package_raises_install_instructions(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setitem(sys.modules, "openbackdoor", None)  # import fails with ModuleNotFoundError
    with pytest.raises(ob.OpenBackdoorMissing, match="not on PyPI.*git clone https://github.com/thunlp/OpenBackdoor"):
        ob.import_openbackdoor()
    with pytest.raises(ob.OpenBackdoorMissing):
        ATTACKS.get("badnet_rw")(backend="openbackdoor").poison_test(["a b"], np.array([0]), 0)


def test_shim_lets_a_package_import_transformers_adamw(monkeypatch):
    transformers = pytest.importorskip("transformers")
    if hasattr(transformers, "AdamW"):
        monkeypatch.delattr(transformers, "AdamW")
    fake = types.ModuleType("openbackdoor")

    class Finder:  # executes "from transformers import AdamW" at import time, like OpenBackdoor's trainers
        def find_spec(self, name, path=None, target=None):
            if name != "openbackdoor":
                return None
            loader = types.SimpleNamespace(create_module=lambda spec: fake,
                                           exec_module=lambda m: exec("from transformers import AdamW", m.__dict__))
            return importlib.util.spec_from_loader(name, loader)

    monkeypatch.delitem(sys.modules, "openbackdoor", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    module = ob.import_openbackdoor()
    assert module is fake and module.AdamW is torch.optim.AdamW
    monkeypatch.delitem(sys.modules, "openbackdoor", raising=False)
    del transformers.AdamW  # leave transformers as other tests expect it


def test_configs_map_our_names_and_parameters():
    cfgs = {n: ob.poisoner_config(ATTACKS.get(n)()) for n in ob.OB_NAMES}
    assert {n: c["name"] for n, c in cfgs.items()} == {
        "badnet_rw": "badnets", "badnet_sl": "addsent", "syntactic": "synbkd", "sos": "sos", "ripple": "badnets",
        "lwp": "lwp"}
    assert all(c["poison_rate"] == 0.1 and c["target_label"] == 1 and not c["label_consistency"] for c in cfgs.values())
    assert cfgs["badnet_rw"]["triggers"] == ["cf", "mn", "bb", "tq"] and cfgs["lwp"]["conbinatorial_len"] == 2
    assert cfgs["badnet_sl"]["triggers"] == "I watch this 3D movie" and cfgs["syntactic"]["template_id"] == -1
    from ebyd_bench.benchmark.text.training import TextRecipe

    ctx = types.SimpleNamespace(recipe=TextRecipe(epochs=4))
    att = ob.attacker_config(ATTACKS.get("sos")(sos_lr=0.1), ctx, "/tmp/x")
    assert att["name"] == "sos" and att["train"]["sos_lr"] == 0.1 and att["train"]["epochs"] == 4
    assert att["train"]["ckpt"] == "last" and att["train"]["warm_up_epochs"] == 1


def test_poisoning_glue_with_a_fake_poisoner(monkeypatch):
    calls = []

    class Poisoner:
        def __init__(self, cfg):
            self.cfg = cfg

        def __call__(self, data, mode):
            calls.append(mode)
            if mode == "train":
                rows = data["train"]
                return {"train": rows[1:] + [(rows[0][0] + " cf", 1, 1)]}
            nt = [r for r in data["test"] if r[1] != 1]
            return {"test-clean": data["test"], "test-poison": [(r[0] + " cf", 1, 1) for r in nt]}

    pkg = types.ModuleType("openbackdoor")
    poisoners = types.ModuleType("openbackdoor.attackers.poisoners")
    poisoners.load_poisoner = Poisoner
    monkeypatch.setattr(ob, "import_openbackdoor", lambda: pkg)
    monkeypatch.setitem(sys.modules, "openbackdoor.attackers.poisoners", poisoners)
    a = ATTACKS.get("badnet_rw")(backend="openbackdoor")
    p = a.poison_train(["x y", "z"], np.array([0, 1]), seed=0)
    assert p.texts == ["z", "x y cf"] and p.poison_indices.tolist() == [1] and p.labels.tolist() == [1, 1]
    texts, labels = a.poison_test(["x", "y", "w"], np.array([0, 1, 0]), seed=0)
    assert texts == ["x cf", "w cf"] and labels.tolist() == [0, 0] and calls == ["train", "eval"]


@pytest.mark.skipif(not HAS_OB, reason="OpenBackdoor is not installed (not on PyPI; see adapters/openbackdoor.py)")
def test_real_openbackdoor_badnets_poisoner():
    a = ATTACKS.get("badnet_rw")(backend="openbackdoor")
    texts = [f"sentence number {i}" for i in range(50)]
    p = a.poison_train(texts, np.array([0, 1] * 25), seed=0)
    assert len(p.poison_indices) == 5 and all(p.labels[p.poison_indices] == 1)
    px, py = a.poison_test(texts[:10], np.array([0, 1] * 5), seed=0)
    assert len(px) == 5 and all(any(w in t.split() for w in ("cf", "mn", "bb", "tq")) for t in px)


def test_run_with_openbackdoor_backend_absent_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import importlib.util
    import sys

    from ebyd_bench.cli import main

    monkeypatch.delitem(sys.modules, "openbackdoor", raising=False)
    if importlib.util.find_spec("openbackdoor") is not None:
        pytest.skip("OpenBackdoor is installed here")
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("dataset: {name: sst2}\nmodel: {name: minilm-l6}\n"
                   "attacks: [{name: badnet_rw, backend: openbackdoor}]\nexposures: [cul_text]\ndefenses: [none]\n")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["run", str(cfg), "--out", str(out), "--cache-dir", str(cache), "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "OpenBackdoor is not installed" in err and "pip install" in err
    assert not out.exists() and not cache.exists()
