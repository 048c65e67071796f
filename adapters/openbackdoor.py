"""Run a text attack through OpenBackdoor (``thunlp/OpenBackdoor``) with ``backend: openbackdoor``.

Our attack names and parameters are mapped to OpenBackdoor's poisoner/attacker config dicts; it
is fed our splits (the victim-training split as ``train``, the dataset's dev split as ``dev``);
the trained weights are copied back into our victim, so cache keys (the attack's ``backend``
parameter is part of them) and metrics stay ours. Its poisoners draw from Python's ``random``:
we seed it with the run seed and restore the caller's state afterwards.

OpenBackdoor is not on PyPI, and it imports ``transformers.AdamW``, which recent transformers
removed: :func:`import_openbackdoor` installs a shim (``transformers.AdamW = torch.optim.AdamW``)
before importing it, and raises :class:`OpenBackdoorMissing` with install instructions if absent.
Differences from our native attacks are OpenBackdoor's own (e.g. it checkpoints on dev data unless
told otherwise — we pass ``ckpt: last``; see docs/methods.md §1.6-4, §4.3).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import random
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from ebyd_bench.benchmark.errors import BenchmarkError
from ebyd_bench.benchmark.registries import TEXT_BACKENDS

if TYPE_CHECKING:  # pragma: no cover
    from ebyd_bench.attacks_registry.text.base import PoisonedTextSet, TextAttack, TextAttackContext

INSTALL = ("OpenBackdoor is not installed (it is not on PyPI): git clone https://github.com/thunlp/OpenBackdoor "
           "&& cd OpenBackdoor && pip install -r requirements.txt && python setup.py install; "
           "or use backend: native")

#: our attack → (OpenBackdoor attacker/trainer name, poisoner name)
OB_NAMES = {"badnet_rw": ("base", "badnets"), "badnet_sl": ("base", "addsent"), "syntactic": ("base", "synbkd"),
            "sos": ("sos", "sos"), "ripple": ("ripples", "badnets"), "lwp": ("lwp", "lwp")}


class OpenBackdoorMissing(BenchmarkError):
    """``backend: openbackdoor`` was asked for but the package cannot be imported."""


def install_adamw_shim() -> None:
    """OpenBackdoor does ``from transformers import AdamW``; transformers ≥ 4.x removed it."""
    import transformers

    if not hasattr(transformers, "AdamW"):
        transformers.AdamW = torch.optim.AdamW


def import_openbackdoor():
    """The ``openbackdoor`` module, imported after the AdamW shim; a clear error if it is absent."""
    try:
        install_adamw_shim()
        return importlib.import_module("openbackdoor")
    except ImportError as exc:
        if exc.name == "openbackdoor":
            raise OpenBackdoorMissing(INSTALL) from None
        raise OpenBackdoorMissing(f"OpenBackdoor is installed but failed to import ({exc}). {INSTALL}") from exc


def ob_names(attack: TextAttack) -> tuple[str, str]:
    if attack.name not in OB_NAMES:
        raise BenchmarkError(f"attack '{attack.name}' has no OpenBackdoor counterpart")
    return OB_NAMES[attack.name]


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


@contextlib.contextmanager
def seeded_random(seed: int) -> Iterator[None]:
    """Seed Python's ``random`` (OpenBackdoor's source of randomness) and restore it afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _rows(texts: Sequence[str], labels: np.ndarray) -> list[tuple[str, int, int]]:
    return [(t, int(y), 0) for t, y in zip(texts, labels)]


def _poisoner(attack: TextAttack):
    module = import_openbackdoor()
    return importlib.import_module(f"{module.__name__}.attackers.poisoners").load_poisoner(poisoner_config(attack))


def poison_train(attack: TextAttack, texts: Sequence[str], labels: np.ndarray, seed: int) -> PoisonedTextSet:
    """OpenBackdoor's training-set poisoning of our split; poisoned rows are those it flags."""
    from ebyd_bench.attacks_registry.text.base import PoisonedTextSet

    with seeded_random(seed):
        rows = _poisoner(attack)({"train": _rows(texts, labels), "dev": []}, "train")["train"]
    flags = np.asarray([int(r[2]) for r in rows])
    return PoisonedTextSet([r[0] for r in rows], np.asarray([int(r[1]) for r in rows], dtype=np.int64),
                           np.flatnonzero(flags == 1), {"backend": "openbackdoor"})


def poison_test(attack: TextAttack, texts: Sequence[str], labels: np.ndarray,
                seed: int) -> tuple[list[str], np.ndarray]:
    """OpenBackdoor's ``test-poison`` of our test subset, with the true (non-target) labels."""
    with seeded_random(seed):
        rows = _poisoner(attack)({"test": _rows(texts, labels)}, "eval")["test-poison"]
    rows = [r for r in rows if int(r[2]) == 1]
    true = np.asarray(labels)[np.asarray(labels) != attack.target]
    if len(rows) != len(true):
        raise BenchmarkError(f"OpenBackdoor returned {len(rows)} test poisons for {len(true)} non-target samples")
    return [r[0] for r in rows], true


def train(attack: TextAttack, model: torch.nn.Module, poisoned: PoisonedTextSet, ctx: TextAttackContext,
          seed: int) -> torch.nn.Module:
    """``attacker.attack(victim, data)`` on our clean split, from our victim's initial weights; the
    trained weights are copied back. OpenBackdoor poisons internally with the same seeded draws as
    :func:`poison_train`."""
    module = import_openbackdoor()
    load_attacker = importlib.import_module(f"{module.__name__}.attackers").load_attacker
    load_victim = importlib.import_module(f"{module.__name__}.victims").load_victim
    with tempfile.TemporaryDirectory() as tmp:
        model.hf.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)
        victim = load_victim({"type": "plm", "model": model.hf.config.model_type, "path": tmp,
                              "num_classes": ctx.num_classes,
                              "device": "gpu" if ctx.device.startswith("cuda") else "cpu",
                              "max_len": model.max_length})
        data = {"train": _rows(ctx.train_texts, ctx.train_labels), "dev": _rows(ctx.dev_texts, ctx.dev_labels),
                "test": []}
        torch.manual_seed(seed)
        with seeded_random(seed):
            victim = load_attacker(attacker_config(attack, ctx, tmp)).attack(victim, data)
    model.hf.load_state_dict(victim.plm.state_dict())
    return model.to(ctx.device).eval()


def installed() -> bool:
    """Whether ``openbackdoor`` can be imported (checked without importing it)."""
    if "openbackdoor" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("openbackdoor") is not None
    except (ImportError, ValueError):
        return False


@TEXT_BACKENDS.register("openbackdoor")
class OpenBackdoorBackend:
    """``backend: openbackdoor``: OpenBackdoor's poisoners and attackers run our split and victim."""

    install_hint = INSTALL
    installed = staticmethod(installed)
    poison_train = staticmethod(poison_train)
    poison_test = staticmethod(poison_test)
    train = staticmethod(train)
