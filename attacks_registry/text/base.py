"""Base class of text backdoor attacks (docs/methods.md §4.1).

Shared rules: words are whitespace tokens and text is rejoined with single spaces; an insertion
position is uniform over 0..len(words) inclusive; "mix" setting — ⌊rate·N⌋ samples drawn from all
classes, triggered and relabelled to the target (1), replacing their clean originals; test poisons
are every non-target test sample with the trigger, labelled as the target. Attacks that control
training (SOS, RIPPLe, LWP) override :meth:`TextAttack.train`; the rest use the standard fine-tune.
``backend: openbackdoor`` runs OpenBackdoor's poisoner (and trainer) instead, see
:mod:`ebyd_bench.adapters.openbackdoor`.
"""

from __future__ import annotations


import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np
from torch import nn

from ebyd_bench.attacks_registry.base import Attack
from ebyd_bench.benchmark.cache import key_stable
from ebyd_bench.benchmark.params import NonNegativeInt
from ebyd_bench.benchmark.registries import TEXT_BACKENDS
from ebyd_bench.benchmark.text.training import LossFn, TextRecipe, ce_loss, fine_tune


@dataclass
class TextAttackContext:
    """What an attack may use: the clean victim-training split (never ``D_d``), a model factory, the
    recipe, the data root (pre-generated paraphrases) and a cache for trained parts."""

    dataset: str
    data_root: Path | None
    num_classes: int
    device: str
    recipe: TextRecipe
    model_factory: Callable[..., nn.Module]
    artifact: Callable[[str, dict, Callable[[], dict]], dict]
    train_texts: list[str] = field(default_factory=list)
    train_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dev_texts: list[str] = field(default_factory=list)
    dev_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class PoisonedTextSet:
    """The attacker's training set. ``poison_indices``: positions (in ``texts``) of full-trigger samples."""

    texts: list[str]
    labels: np.ndarray
    poison_indices: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextAttack(Attack):
    """An all-to-one text backdoor; its cache key is :meth:`params` plus the digests of
    :meth:`trigger_files`, which the text domain adds."""

    target: NonNegativeInt = 1
    backend: Literal["native", "openbackdoor"] = "native"

    domain: ClassVar[str] = "text"
    #: epochs of the paper's recipe for this attack (docs/methods.md §2.4); TextRecipe.epochs overrides
    paper_epochs: ClassVar[int] = 13
    #: True for SOS/LWP: test-time partial triggers ("test-neg") give the false-trigger rate
    has_negatives: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend != "native":  # at config validation, before anything is written
            backend = self.external()
            if not backend.installed():
                raise ValueError(backend.install_hint)
            refusal = getattr(backend, "refusal", lambda attack: None)(self)
            if refusal:
                raise ValueError(refusal)

    def external(self) -> Any:
        """The registered backend that poisons and trains instead of this code (``backend: openbackdoor``)."""
        return TEXT_BACKENDS.get(self.backend)

    def rng(self, seed: int, salt: str = "train") -> np.random.Generator:
        """Seeded from the run seed, the attack's name and a purpose, independent of call order."""
        return np.random.default_rng([seed, zlib.crc32(self.name.encode()), zlib.crc32(salt.encode())])

    def setup(self, seed: int, ctx: TextAttackContext | None = None) -> None:
        """Load or build trigger state (Syntactic: the paraphrase tables); nothing by default."""

    # ------------------------------------------------------------------ triggers
    def insert(self, text: str, rng: np.random.Generator) -> str:
        """One triggered copy of ``text`` (insertion attacks)."""
        raise NotImplementedError

    def triggered(self, texts: Sequence[str], rows: np.ndarray, rng: np.random.Generator, split: str) -> list[str]:
        """Triggered copies; ``rows`` are dataset row indices (Syntactic looks paraphrases up by row)."""
        return [self.insert(t, rng) for t in texts]

    def select(self, labels: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """⌊rate·N⌋ positions drawn uniformly from every class ("mix")."""
        n = int(np.floor(self.poison_rate * len(labels)))
        return np.sort(rng.choice(len(labels), size=n, replace=False))

    # ------------------------------------------------------------------ poisoning
    def poison_train(self, texts: Sequence[str], labels: np.ndarray, seed: int,
                     rows: np.ndarray | None = None) -> PoisonedTextSet:
        """Replace the selected samples by triggered copies relabelled to the target."""
        if self.backend != "native":
            return self.external().poison_train(self, texts, labels, seed)
        rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
        rng = self.rng(seed)
        idx = self.select(labels, rows, rng)
        out, y = list(texts), np.array(labels, copy=True)
        for i, t in zip(idx, self.triggered([texts[i] for i in idx], rows[idx], rng, "train")):
            out[i] = t
        y[idx] = self.target
        return PoisonedTextSet(out, y, idx)

    def poison_test(self, texts: Sequence[str], labels: np.ndarray, seed: int,
                    rows: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
        """Triggered copies of the non-target samples, with their true labels (ASR excludes the target)."""
        if self.backend != "native":
            return self.external().poison_test(self, texts, labels, seed)
        rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
        keep = np.flatnonzero(np.asarray(labels) != self.target)
        return (self.triggered([texts[i] for i in keep], rows[keep], self.rng(seed, "test"), "test"),
                np.asarray(labels)[keep])

    def trigger_files(self, data_root: Path | None, dataset: str) -> list[Path]:
        """Files the trigger is read from; their digests enter the poisoned model's cache key."""
        return []

    def negative_test(self, texts: Sequence[str], labels: np.ndarray, seed: int) -> tuple[list[str], np.ndarray]:
        """Partial-trigger copies with their true labels (SOS/LWP ``test-neg``); empty otherwise."""
        return [], np.zeros(0, np.int64)

    # ------------------------------------------------------------------ training
    def train(self, model: nn.Module, poisoned: PoisonedTextSet, ctx: TextAttackContext, seed: int) -> nn.Module:
        """Standard fine-tune (§2.4): AdamW, linear warm-up, the recipe's epochs (paper: 13)."""
        if self.backend != "native":
            return self.external().train(self, model, poisoned, ctx, seed)
        return standard_fine_tune(model, poisoned.texts, poisoned.labels, ctx, seed, self.paper_epochs)


def standard_fine_tune(model: nn.Module, texts: Sequence[str], labels: np.ndarray, ctx: TextAttackContext,
                       seed: int, paper_epochs: int, warmup: bool = True, loss_fn: LossFn = ce_loss) -> nn.Module:
    """The recipe's AdamW loop; ``warmup=False`` keeps the linear decay without warm-up (LWP, as OB)."""
    r = ctx.recipe
    return fine_tune(model, texts, labels, epochs=r.epochs_for(paper_epochs), lr=r.lr, batch_size=r.batch_size,
                     seed=seed, device=ctx.device, warmup_fraction=r.warmup_fraction if warmup else 0.0,
                     weight_decay=r.weight_decay, max_grad_norm=r.max_grad_norm, loss_fn=loss_fn,
                     group_by_length=r.group_by_length)


def clean_fine_tuned(ctx: TextAttackContext, seed: int) -> nn.Module:
    """The victim fine-tuned on the clean training split with the standard recipe (13 paper epochs).

    Cached as an attack part shared by SOS (its first stage) and RIPPLe (the surgery's source)."""
    params = {"recipe": key_stable(asdict(ctx.recipe)), "paper_epochs": 13}

    def build() -> dict:
        model = standard_fine_tune(ctx.model_factory(seed=seed), ctx.train_texts, ctx.train_labels, ctx, seed, 13)
        return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}

    model = ctx.model_factory(seed=seed, pretrained=False)
    model.load_state_dict(ctx.artifact("clean_finetune", params, build))
    return model.to(ctx.device).eval()


def insert_words(words: list[str], pieces: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Insert each piece at its own uniform position in 0..len(words) (the growing list)."""
    words = list(words)
    for piece in pieces:
        words.insert(int(rng.integers(0, len(words) + 1)), piece)
    return words


def insert_block(text: str, block: str, rng: np.random.Generator) -> str:
    """Insert ``block``'s words as one contiguous run at a uniform word position."""
    words = text.split()
    pos = int(rng.integers(0, len(words) + 1))
    return " ".join(words[:pos] + block.split() + words[pos:])
