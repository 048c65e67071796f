"""A defense may read nothing but what it is given (docs/methods.md §1.2): the model, the exposure and
``ctx.data`` = ``D_d``. Never the test set, the poisoned training data, the trigger or the attack.

Design. The harness keeps the test set, the attack object and the poisoned data in the memory of
the process that calls ``defend``, so an in-process check can only look for known access paths.
Instead, every registered defense (at tiny settings, with and without an exposure, input scorers
included) runs in a fresh Python process that holds no test data at all, under a
``sys.addaudithook`` tripwire armed just before ``defend``:

* opening, listing or globbing any path under the data roots (``../shared/data``,
  ``$EBYD_DATA_ROOT``) or the artifact caches (``$EBYD_CACHE_DIR``, the user cache folder, where
  decoded datasets and poisoned models live) raises;
* importing a module of the data or attack side (``adapters``, ``attacks_registry``,
  ``ebyd_bench.benchmark.grid.runner``, ``ebyd_bench.cli``, ``results``) raises, whether by an import statement or
  ``importlib`` (a first meta-path finder), and so does opening their source files — these are the
  only code paths to the test split, the triggers and the poisoned data. The child first checks
  that none of them was imported by the defenses themselves (a cached module needs no import).

A hook violation raises inside the defense and is also recorded, so a method that swallows the
error is still reported. A method that reached for the harness's in-memory test set (through the
call stack or the garbage collector) finds nothing here and crashes, which fails the test too.
Three deliberately cheating defenses (one lists the data root, one imports the attack registry,
one walks the call stack for the harness) must all be caught: that shows the tripwire works.
Every registered defense needs an entry in ``TINY`` below, so a new one cannot slip past. The tripwire
itself (``TRIPWIRE``, ``run_sandboxed``) lives in ``tests/conftest.py``, shared with the text test.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

from ebyd_bench.benchmark.methods import DefenseData, MethodContext
from ebyd_bench.benchmark.registries import DEFENSES

TINY = {
    "none": {}, "nc": {"epochs": 1}, "strip": {"n_overlays": 4}, "rp": {"epochs": 1}, "recover": {"epochs": 1},
    "ft": {"epochs": 1}, "fp": {}, "nad": {"teacher_epochs": 1, "epochs": 1}, "anp": {"iterations": 1},
    "ibau": {"rounds": 1, "batch_size": 32, "outer_portion": 0.1, "steps": None},
    "cheat_lists_data_root": {}, "cheat_imports_attacks": {}, "cheat_walks_the_stack": {},
}
CHEATS = {"cheat_lists_data_root", "cheat_imports_attacks", "cheat_walks_the_stack"}

CHILD = r'''
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ebyd_bench.benchmark.methods import Defense, DefenseData, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.models.resnet_cifar import resnet18_narrow
from ebyd_bench.benchmark.registries import DEFENSES


@dataclass
class ListsDataRoot(Defense):
    def defend(self, model, exposed, ctx):
        os.listdir(FORBIDDEN_ROOTS[0])
        return DefenseResult(model)


@dataclass
class ImportsAttacks(Defense):
    def defend(self, model, exposed, ctx):
        try:  # swallowing the error does not help: the hook has recorded the attempt
            importlib.import_module("ebyd_bench.attacks_registry.image")
        except PermissionError:
            pass
        return DefenseResult(model)


@dataclass
class WalksTheStack(Defense):
    def defend(self, model, exposed, ctx):
        run = next(f.frame.f_locals["self"] for f in inspect.stack() if "StageRunner" in repr(f.frame.f_locals.get("self")))
        return DefenseResult(model, {"peek": len(run.domain.data.test)})


for name, cls in (("cheat_lists_data_root", ListsDataRoot), ("cheat_imports_attacks", ImportsAttacks),
                  ("cheat_walks_the_stack", WalksTheStack)):
    DEFENSES.add(name, cls, source="tests")  # not built-ins: the catalog ignores them
classes = {n: DEFENSES.get(n) for n in DEFENSES.names()}  # imports every defense module before arming
# text defenses need text data and a text victim: tests/text/test_text_data_access.py runs the same tripwire on them
names = [n for n, c in classes.items() if getattr(c, "domain", "image") == "image"]
preloaded = sorted(m for m in sys.modules if forbidden_module(m))
torch.manual_seed(0)
rng = np.random.default_rng(0)
data = DefenseData(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 64), 10)
ctx = MethodContext(data, seed=0, model_factory=lambda **kw: resnet18_narrow(width=8, **kw))
model = resnet18_narrow(width=8).eval()
exposed = ExposureResult(resnet18_narrow(width=8).eval(), 0, 0.5, [0.5] + [0.5 / 9] * 9, [], "ca_min")
probe = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)  # stands in for the inputs the harness scores
arm()
payload = {"preloaded": preloaded, "results": {}}
for name in names:
    if name not in TINY:
        payload["results"][name] = {"error": "no tiny settings in TINY", "violations": []}
        continue
    violations.clear()
    error = None
    try:
        for exp in (None, exposed):
            armed[0] = True
            try:
                out = classes[name](**TINY[name]).defend(model, exp, ctx)
                if out.input_scorer is not None:
                    out.input_scorer(probe)
            finally:
                armed[0] = False
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        error = f"{type(exc).__name__}: {exc}"
    payload["results"][name] = {"error": error, "violations": list(violations)}
report(payload)
'''


def test_no_defense_reads_test_data_attacks_or_caches(sandbox):
    report = sandbox(CHILD, TINY, timeout=900)
    assert report["preloaded"] == [], f"importing the defenses pulls in harness data code: {report['preloaded']}"
    results = report["results"]
    assert CHEATS <= set(results) and {"nc", "strip", "rp", "ft"} <= set(results)
    for name in CHEATS:  # the tripwire itself must work
        r = results[name]
        assert r["violations"] or r["error"], f"{name} was not caught: {r}"
    assert results["cheat_lists_data_root"]["violations"] and results["cheat_imports_attacks"]["violations"]
    honest = {n: r for n, r in results.items() if n not in CHEATS}
    bad = {n: r for n, r in honest.items() if r["violations"] or r["error"]}
    assert not bad, f"defenses that failed or touched forbidden data in the sandbox: {bad}"


def test_the_defense_api_offers_no_path_to_test_data():
    """``defend`` takes (model, exposed, ctx) only, and the context carries D_d and nothing test-side."""
    assert {f.name for f in fields(MethodContext)} == {"data", "seed", "device", "model_factory", "monitor"}
    assert {f.name for f in fields(DefenseData)} == {"images", "labels", "num_classes"}
    for name in DEFENSES.names():
        params = list(inspect.signature(DEFENSES.get(name).defend).parameters)
        assert params == ["self", "model", "exposed", "ctx"], f"{name}.defend{params}"
