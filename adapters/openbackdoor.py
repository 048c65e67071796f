"""Run a text attack through OpenBackdoor (``thunlp/OpenBackdoor``) with ``backend: openbackdoor``.

Our attack names and parameters are mapped to OpenBackdoor's poisoner/attacker config dicts; it
is fed our splits (the victim-training split as ``train``, the dataset's dev split as ``dev``);
the trained weights are copied back into our victim, so cache keys (the attack's ``backend``
parameter is part of them) and metrics stay ours. Its poisoners draw from Python's ``random``,
seeded with the run seed.

**OpenBackdoor runs in a subprocess.** Importing it replaces the root logger's handlers, registers
top-level modules (``test``, shadowing the standard library's, ``glove``, ``scpn``), prints to
stdout, and its trainers and poisoners write folders into the working directory. The harness never
imports it: :func:`call` sends each request to a :class:`Worker` (``python -m
ebyd_bench.adapters.openbackdoor --serve``, started once per harness process and device) whose
working directory and log are a temporary folder, removed when it stops (its log's tail is shown on
failure).

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

import atexit
import contextlib
import importlib
import importlib.abc
import itertools
import importlib.util
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ebyd_bench.benchmark.errors import BenchmarkError
from ebyd_bench.benchmark.registries import TEXT_BACKENDS
from ebyd_bench.benchmark.text.training import attack_training_attention

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

#: dev sentences handed to OpenBackdoor's trainers (used for logging only)
DEV_ROWS = 256

#: attacks trained under the math attention kernel, as their native versions (RIPPLe's double backward)
MATH_ATTENTION = ("ripple", "sos", "lwp")


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
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
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
        with attack_training_attention() if request.get("math_attention") else contextlib.nullcontext():
            victim = attacker.attack(victim, request["data"])
        return {"state": {k: v.detach().cpu() for k, v in victim.plm.state_dict().items()}}
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


class Worker:
    """One OpenBackdoor subprocess (``python -m ebyd_bench.adapters.openbackdoor --serve``), started on
    first use and kept for the harness process's lifetime: it imports OpenBackdoor once (~10 s).
    Requests and results travel as pickles over two pipes; its working directory is a temporary
    folder (every request runs in a fresh sub-folder, removed afterwards) and its stdout/stderr go to
    ``openbackdoor.log`` there. Every request reseeds ``random``, NumPy and torch."""

    def __init__(self, device: str | None) -> None:
        self.device = device
        self.dir = Path(tempfile.mkdtemp(prefix="ebyd-openbackdoor-"))
        self.log = self.dir / LOG
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ebyd_bench.adapters.openbackdoor", "--serve", str(to_child_r),
                 str(from_child_w), str(torch.get_num_threads())], cwd=self.dir, env=_child_env(device),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, pass_fds=(to_child_r, from_child_w))
        os.close(to_child_r)
        os.close(from_child_w)
        self.writer = os.fdopen(self._to_child, "wb")
        self.reader = os.fdopen(self._from_child, "rb")

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            pickle.dump(request, self.writer)
            self.writer.flush()
            kind, payload = pickle.load(self.reader)
        except (EOFError, BrokenPipeError, OSError, pickle.UnpicklingError):
            tail = _tail(self.log)
            self.close()
            raise BenchmarkError(f"the OpenBackdoor subprocess died (exit {self.proc.returncode})\n{tail}") from None
        if kind == "missing":
            raise OpenBackdoorMissing(payload)
        if kind == "error":
            raise BenchmarkError(f"OpenBackdoor failed: {payload}\n{_tail(self.log)}")
        return payload

    def close(self) -> None:
        for f in (self.writer, self.reader):
            with contextlib.suppress(OSError):
                f.close()
        try:
            self.proc.wait(timeout=30)  # EOF on its request pipe ends the child
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        if _WORKERS.get(self.device) is self:
            del _WORKERS[self.device]


_WORKERS: dict[str | None, Worker] = {}


def call(request: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    """Run :func:`execute` in this process's OpenBackdoor subprocess (one per device)."""
    if not (device or "").startswith("cuda:"):  # one worker for cpu / cuda / poisoning-only calls
        device = None
    worker = _WORKERS.get(device)
    if worker is None or worker.proc.poll() is not None:
        worker = _WORKERS[device] = Worker(device)
    return worker.request(dict(request, threads=torch.get_num_threads()))


def shutdown() -> None:
    """Stop every OpenBackdoor subprocess of this process (also at exit)."""
    for worker in list(_WORKERS.values()):
        worker.close()


atexit.register(shutdown)


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "--- OpenBackdoor log (last lines) ---\n" + "\n".join(text[-lines:])


def serve(read_fd: int, write_fd: int, threads: int) -> int:
    """Child loop: one pickled request in, one pickled ``(kind, payload)`` out, until EOF."""
    torch.set_num_threads(max(1, threads))
    home = Path.cwd()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        for n in itertools.count():
            try:
                request = pickle.load(reader)
            except EOFError:  # the harness closed the pipe, or died: leave nothing behind
                shutil.rmtree(home, ignore_errors=True)
                return 0
            work = home / f"request-{n}"
            work.mkdir()
            os.chdir(work)
            try:
                reply: tuple[str, Any] = ("ok", execute(request, work))
            except OpenBackdoorMissing as exc:
                reply = ("missing", str(exc))
            except Exception as exc:  # reported to the harness with the log's tail
                traceback.print_exc()
                reply = ("error", f"{type(exc).__name__}: {exc}")
            finally:
                os.chdir(home)
                shutil.rmtree(work, ignore_errors=True)
            sys.stdout.flush()
            pickle.dump(reply, writer)
            writer.flush()
    return 0


# --------------------------------------------------------------------------- the backend (harness side)
def poison_train(attack: TextAttack, texts: Sequence[str], labels: np.ndarray, seed: int) -> PoisonedTextSet:
    """OpenBackdoor's training-set poisoning of our split; poisoned rows are those it flags."""
    from ebyd_bench.attacks_registry.text.base import PoisonedTextSet

    rows = call({"op": "poison", "config": poisoner_config(attack), "mode": "train", "seed": seed,
                 "data": {"train": _rows(texts, labels), "dev": []}})["train"]
    flags = np.asarray([r[2] for r in rows], dtype=np.int64)
    info: dict[str, Any] = {"backend": "openbackdoor"}
    if attack.name == "sos":  # OB's SOS set: the poisons and the negatives only (as the native one)
        info["negatives"] = int(len(rows) - (flags == 1).sum())
    elif attack.name == "lwp":  # each chosen sample → its single-piece negatives + the positive
        info["negatives"] = int(len(rows) - len(texts))
    return PoisonedTextSet([r[0] for r in rows], np.asarray([r[1] for r in rows], dtype=np.int64),
                           np.flatnonzero(flags == 1), info)


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
        # OB scores dev after every epoch for its log only (ckpt: last): a bounded slice keeps that cheap
        # without changing the weights (each shuffled DataLoader takes one torch draw whatever its size)
        data = {"train": _rows(ctx.train_texts, ctx.train_labels),
                "dev": _rows(ctx.dev_texts[:DEV_ROWS], ctx.dev_labels[:DEV_ROWS])}
        state = call({"op": "attack", "config": attacker_config(attack, ctx, "checkpoints"), "victim": victim,
                      "data": data, "seed": seed, "math_attention": attack.name in MATH_ATTENTION},
                     device=ctx.device)["state"]
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
    sys.exit(serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])) if sys.argv[1:2] == ["--serve"] else 2)
