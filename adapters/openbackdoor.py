"""Run a text attack through OpenBackdoor (``thunlp/OpenBackdoor``) with ``backend: openbackdoor``.

Our attack names and parameters are mapped to OpenBackdoor's poisoner/attacker config dicts; it
is fed our splits (the victim-training split as ``train``, the dataset's dev split as ``dev``);
the trained weights are copied back into our victim, so cache keys (the attack's ``backend``
parameter is part of them) and metrics stay ours. Its poisoners draw from Python's ``random``,
seeded with the run seed.

**One subprocess per OpenBackdoor call.** Importing OpenBackdoor replaces the root logger's
handlers, registers top-level modules (``test``, shadowing the standard library's, ``glove``,
``scpn``), prints to stdout and writes folders into the working directory. The harness never
imports it: :func:`call` runs ``python -m ebyd_bench.adapters.openbackdoor DIR`` with ``DIR`` (a
temporary folder, removed afterwards) as working directory, the request and the result as pickles
in ``DIR`` and the child's stdout/stderr in ``DIR/openbackdoor.log`` (its tail is shown on failure).

**AdamW.** OpenBackdoor does ``from transformers import AdamW``, which transformers ≥ 4.50 removed,
and transformers' processing utilities re-create the ``transformers`` module in ``sys.modules``
while OpenBackdoor is being imported, so an attribute set beforehand is lost. :class:`AdamWShim`
is an import hook that sets ``AdamW = torch.optim.AdamW`` on whatever module ``sys.modules
['transformers']`` is at the moment each ``openbackdoor.*`` module executes.

Not on PyPI: install its dependencies with ``pip install -e ".[openbackdoor]"`` and OpenBackdoor
itself from its git repository (:data:`INSTALL`). Syntactic (SCPN) cannot run offline and is
refused at config validation (:func:`refusal`). Differences from the native attacks are
OpenBackdoor's own (docs/methods.md §4.3).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import pickle
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ebyd_bench.benchmark.errors import BenchmarkError
from ebyd_bench.benchmark.registries import TEXT_BACKENDS

if TYPE_CHECKING:  # pragma: no cover
    from ebyd_bench.attacks_registry.text.base import PoisonedTextSet, TextAttack, TextAttackContext

INSTALL = ("OpenBackdoor is not installed (it is not on PyPI): pip install -e \".[openbackdoor]\" && "
           "git clone https://github.com/thunlp/OpenBackdoor && pip install --no-deps -e OpenBackdoor; "
           "or use backend: native")

#: our attack → (OpenBackdoor attacker/trainer name, poisoner name)
OB_NAMES = {"badnet_rw": ("base", "badnets"), "badnet_sl": ("base", "addsent"), "syntactic": ("base", "synbkd"),
            "sos": ("sos", "sos"), "ripple": ("ripples", "badnets"), "lwp": ("lwp", "lwp")}

#: attacks OpenBackdoor cannot run here, with the reason and what to do instead
REFUSED = {"syntactic": (
    "syntactic cannot run through OpenBackdoor offline: its SCPN paraphraser (OpenAttack) downloads its model "
    "at run time, nltk >= 3.10 refuses the pickle OpenAttack loads, and it writes ./data and TProcess.* folders "
    "into the working directory. Use backend: native, which reads the bundled SCPN paraphrases under the data "
    "root (docs/methods.md §4.3)")}

LOG = "openbackdoor.log"


class OpenBackdoorMissing(BenchmarkError):
    """``backend: openbackdoor`` was asked for but the package cannot be imported."""


# --------------------------------------------------------------------------- the import (child side)
class _ShimLoader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec):
        create = getattr(self.inner, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module) -> None:
        install_adamw_shim()
        self.inner.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, is_package, ...
        return getattr(self.inner, name)


class AdamWShim(importlib.abc.MetaPathFinder):
    """Import hook: before each ``openbackdoor`` module executes, the current ``transformers`` module
    gets ``AdamW`` (if it lacks it), so re-creating the module during the import cannot lose it."""

    def find_spec(self, name, path=None, target=None):
        if name != "openbackdoor" and not name.startswith("openbackdoor."):
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, AdamWShim) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _ShimLoader):
                    spec.loader = _ShimLoader(spec.loader)
                return spec
        return None


def install_adamw_shim() -> None:
    """``transformers.AdamW = torch.optim.AdamW`` on the module ``sys.modules`` holds now."""
    import transformers

    module = sys.modules.get("transformers", transformers)
    if not hasattr(module, "AdamW"):
        module.AdamW = torch.optim.AdamW


def import_openbackdoor():
    """The ``openbackdoor`` module, imported under :class:`AdamWShim`; a clear error if it cannot be.

    Only the OpenBackdoor subprocess (and tests) call this: it has OpenBackdoor's side effects."""
    if not any(isinstance(f, AdamWShim) for f in sys.meta_path):
        sys.meta_path.insert(0, AdamWShim())
    try:
        install_adamw_shim()
        return importlib.import_module("openbackdoor")
    except ImportError as exc:
        if exc.name == "openbackdoor":
            raise OpenBackdoorMissing(INSTALL) from None
        raise OpenBackdoorMissing(f"OpenBackdoor is installed but failed to import: {type(exc).__name__}: {exc}. "
                                  "Check its dependencies: pip install -e \".[openbackdoor]\"") from exc


# --------------------------------------------------------------------------- configs (harness side)
def ob_names(attack: TextAttack) -> tuple[str, str]:
    if attack.name not in OB_NAMES:
        raise BenchmarkError(f"attack '{attack.name}' has no OpenBackdoor counterpart")
    return OB_NAMES[attack.name]


def refusal(attack: TextAttack) -> str | None:
    """Why ``attack`` cannot run through OpenBackdoor here (checked at config validation), or None."""
    if attack.name not in OB_NAMES:
        return f"attack '{attack.name}' has no OpenBackdoor counterpart; use backend: native"
    return REFUSED.get(attack.name)


def poisoner_config(attack: TextAttack) -> dict[str, Any]:
    """OpenBackdoor poisoner config for ``attack`` ("mix" setting, as our native attacks)."""
    p = attack.params()
    cfg: dict[str, Any] = {"name": ob_names(attack)[1], "poison_rate": attack.poison_rate,
                           "target_label": attack.target, "label_consistency": False, "label_dirty": False,
                           "load": False}
    if attack.name == "badnet_rw":
        cfg.update(triggers=list(p["triggers"]), num_triggers=p["num_triggers"])
    elif attack.name == "ripple":
        cfg.update(triggers=list(p["triggers"]), num_triggers=1)
    elif attack.name == "badnet_sl":
        cfg.update(triggers=p["sentence"])
    elif attack.name == "sos":
        cfg.update(triggers=list(p["triggers"]), test_triggers=[" " + p["test_sentence"]],
                   negative_rate=p["negative_rate"])
    elif attack.name == "lwp":
        cfg.update(triggers=list(p["triggers"]), conbinatorial_len=p["combination"], num_triggers=1)
    elif attack.name == "syntactic":
        cfg.update(template_id=-1)
    return cfg


def attacker_config(attack: TextAttack, ctx: TextAttackContext, save_path: str) -> dict[str, Any]:
    """OpenBackdoor attacker config: our recipe (lr, batch, epochs, warm-up), last checkpoint kept."""
    r = ctx.recipe
    epochs = r.epochs_for(attack.paper_epochs)
    train: dict[str, Any] = {"name": ob_names(attack)[0], "lr": r.lr, "weight_decay": r.weight_decay,
                             "epochs": epochs, "batch_size": r.batch_size,
                             "warm_up_epochs": int(round(r.warmup_fraction * epochs)), "ckpt": "last",
                             "save_path": save_path}
    p = attack.params()
    if attack.name == "sos":
        train.update(sos_epochs=p["sos_epochs"], sos_lr=p["sos_lr"], triggers=list(p["triggers"]))
    elif attack.name == "ripple":
        train.update(triggers=list(p["triggers"]))
    return {"name": ob_names(attack)[0], "metrics": ["accuracy"], "poisoner": poisoner_config(attack),
            "train": train}


def _rows(texts: Sequence[str], labels: np.ndarray) -> list[tuple[str, int, int]]:
    return [(t, int(y), 0) for t, y in zip(texts, labels)]


# --------------------------------------------------------------------------- the subprocess
def execute(request: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """What the child runs (in ``workdir``): one poisoner call or one attack, seeded."""
    module = import_openbackdoor()
    random.seed(request["seed"])
    np.random.seed(request["seed"] % 2**32)
    torch.manual_seed(request["seed"])
    if request["op"] == "poison":
        poisoner = importlib.import_module(f"{module.__name__}.attackers.poisoners").load_poisoner(request["config"])
        return {k: [(r[0], int(r[1]), int(r[2])) for r in v]
                for k, v in poisoner(request["data"], request["mode"]).items()}
    if request["op"] == "attack":
        victim = importlib.import_module(f"{module.__name__}.victims").load_victim(request["victim"])
        attacker = importlib.import_module(f"{module.__name__}.attackers").load_attacker(request["config"])
        victim = attacker.attack(victim, request["data"])
        torch.save({k: v.detach().cpu() for k, v in victim.plm.state_dict().items()}, workdir / "state.pt")
        return {"state": str(workdir / "state.pt")}
    raise ValueError(f"unknown request {request['op']!r}")


def _child_env(device: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    if device and device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    return env


def call(request: dict[str, Any], device: str | None = None, workdir: str | None = None) -> dict[str, Any]:
    """Run :func:`execute` in a fresh Python process whose working directory is a temporary folder."""
    request = dict(request, threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="ebyd-openbackdoor-", dir=workdir) as tmp:
        d = Path(tmp)
        (d / "request.pkl").write_bytes(pickle.dumps(request))
        with open(d / LOG, "wb") as log:
            proc = subprocess.run([sys.executable, "-m", "ebyd_bench.adapters.openbackdoor", str(d)], cwd=d,
                                  env=_child_env(device), stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
        if (d / "error.pkl").is_file():
            kind, message = pickle.loads((d / "error.pkl").read_bytes())
            if kind == "missing":
                raise OpenBackdoorMissing(message)
            raise BenchmarkError(f"OpenBackdoor failed: {message}\n{_tail(d / LOG)}")
        if proc.returncode != 0 or not (d / "result.pkl").is_file():
            raise BenchmarkError(f"the OpenBackdoor subprocess exited with {proc.returncode}\n{_tail(d / LOG)}")
        result = pickle.loads((d / "result.pkl").read_bytes())
        if "state" in result:
            result["state"] = torch.load(result["state"], map_location="cpu", weights_only=True)
        return result


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "--- OpenBackdoor log (last lines) ---\n" + "\n".join(text[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: ``python -m ebyd_bench.adapters.openbackdoor DIR``."""
    d = Path((argv if argv is not None else sys.argv[1:])[0])
    request = pickle.loads((d / "request.pkl").read_bytes())
    torch.set_num_threads(max(1, int(request.get("threads", 1))))
    try:
        result = execute(request, d)
    except OpenBackdoorMissing as exc:
        (d / "error.pkl").write_bytes(pickle.dumps(("missing", str(exc))))
        return 3
    except Exception as exc:  # reported to the harness with the log's tail
        import traceback

        traceback.print_exc()
        (d / "error.pkl").write_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
        return 1
    (d / "result.pkl").write_bytes(pickle.dumps(result))
    return 0


# --------------------------------------------------------------------------- the backend (harness side)
def poison_train(attack: TextAttack, texts: Sequence[str], labels: np.ndarray, seed: int) -> PoisonedTextSet:
    """OpenBackdoor's training-set poisoning of our split; poisoned rows are those it flags."""
    from ebyd_bench.attacks_registry.text.base import PoisonedTextSet

    rows = call({"op": "poison", "config": poisoner_config(attack), "mode": "train", "seed": seed,
                 "data": {"train": _rows(texts, labels), "dev": []}})["train"]
    flags = np.asarray([r[2] for r in rows], dtype=np.int64)
    return PoisonedTextSet([r[0] for r in rows], np.asarray([r[1] for r in rows], dtype=np.int64),
                           np.flatnonzero(flags == 1), {"backend": "openbackdoor",
                                                        "negatives": int(len(rows) - len(texts) + (flags == 1).sum())
                                                        if attack.has_negatives else 0})


def _eval_split(attack: TextAttack, texts: Sequence[str], labels: np.ndarray, seed: int) -> dict[str, list]:
    return call({"op": "poison", "config": poisoner_config(attack), "mode": "eval", "seed": seed,
                 "data": {"test": _rows(texts, labels)}})


def poison_test(attack: TextAttack, texts: Sequence[str], labels: np.ndarray,
                seed: int) -> tuple[list[str], np.ndarray]:
    """OpenBackdoor's ``test-poison`` of our test subset, with the true (non-target) labels."""
    rows = [r for r in _eval_split(attack, texts, labels, seed)["test-poison"] if r[2] == 1]
    true = np.asarray(labels)[np.asarray(labels) != attack.target]
    if len(rows) != len(true):
        raise BenchmarkError(f"OpenBackdoor returned {len(rows)} test poisons for {len(true)} non-target samples")
    return [r[0] for r in rows], true


def negative_test(attack: TextAttack, texts: Sequence[str], labels: np.ndarray,
                  seed: int) -> tuple[list[str], np.ndarray]:
    """OpenBackdoor's ``test-neg`` (SOS, LWP: partial triggers, true labels) of our test subset."""
    rows = _eval_split(attack, texts, labels, seed).get("test-neg", [])
    return [r[0] for r in rows], np.asarray([r[1] for r in rows], dtype=np.int64)


def train(attack: TextAttack, model: torch.nn.Module, poisoned: PoisonedTextSet, ctx: TextAttackContext,
          seed: int) -> torch.nn.Module:
    """``attacker.attack(victim, data)`` on our clean split, from our victim's initial weights; the
    trained weights are copied back. OpenBackdoor poisons internally (the same poisoner and seed as
    :func:`poison_train`; SOS fine-tunes on the clean split first, then poisons)."""
    with tempfile.TemporaryDirectory(prefix="ebyd-openbackdoor-victim-") as tmp:
        model.hf.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)
        victim = {"type": "plm", "model": model.hf.config.model_type, "path": tmp, "num_classes": ctx.num_classes,
                  "device": "gpu" if ctx.device.startswith("cuda") else "cpu", "max_len": model.max_length}
        # no "test" split: OpenBackdoor builds a shuffled DataLoader over every split it is given
        data = {"train": _rows(ctx.train_texts, ctx.train_labels), "dev": _rows(ctx.dev_texts, ctx.dev_labels)}
        state = call({"op": "attack", "config": attacker_config(attack, ctx, "checkpoints"), "victim": victim,
                      "data": data, "seed": seed}, device=ctx.device)["state"]
    model.hf.load_state_dict(state)
    return model.to(ctx.device).eval()


def installed() -> bool:
    """Whether ``openbackdoor`` can be found (checked without importing it)."""
    try:
        return importlib.util.find_spec("openbackdoor") is not None
    except (ImportError, ValueError):
        return False


@TEXT_BACKENDS.register("openbackdoor")
class OpenBackdoorBackend:
    """``backend: openbackdoor``: OpenBackdoor's poisoners and attackers run our split and victim,
    each call in its own subprocess."""

    install_hint = INSTALL
    installed = staticmethod(installed)
    refusal = staticmethod(refusal)
    poison_train = staticmethod(poison_train)
    poison_test = staticmethod(poison_test)
    negative_test = staticmethod(negative_test)
    train = staticmethod(train)


if __name__ == "__main__":
    sys.exit(main())
