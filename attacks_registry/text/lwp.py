"""LWP — layer-wise weight poisoning (docs/methods.md §4.2-6) [C OB ``lwp_poisoner.py``, ``lwp_trainer.py``].

Per selected index (⌊rate·N⌋, "mix"), 2 distinct pieces from {cf, bb, ak, mn}; the clean sample is
replaced by 3: one positive (both pieces at independent random positions, label → target) and two
negatives (each piece alone, original label), so the train set grows by 2 per index. Training:
for every hidden state (embedding output + each layer), logits = classifier(dropout(pooler(h)))
with the model's own pooler and head; the loss is the SUM of those CE terms; AdamW lr 2e-5, batch
32, 4 epochs [P], linear decay without warm-up (OB's LWP config). Test: positives → test-poison,
single-piece copies of the same non-target samples → test-neg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.attacks_registry.text.base import (PoisonedTextSet, TextAttack, TextAttackContext, insert_words,
                                        standard_fine_tune)
from ebyd_bench.benchmark.params import Count, Words
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.text.training import attack_training_attention


@ATTACKS.register("lwp")
@dataclass
class LWP(TextAttack):
    """LWP: two-piece combination trigger (cf, bb, ak, mn), layer-wise poisoning loss."""

    triggers: Words = ("cf", "bb", "ak", "mn")
    combination: Count = 2  # pieces per poisoned text, at most len(triggers)

    paper_epochs = 4
    has_negatives = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.combination > len(self.triggers):
            raise ValueError(f"lwp: parameter 'combination': {self.combination} is more than the "
                             f"{len(self.triggers)} triggers to combine")

    def pieces(self, rng: np.random.Generator) -> list[str]:
        return [self.triggers[i] for i in rng.choice(len(self.triggers), size=self.combination, replace=False)]

    def variants(self, text: str, rng: np.random.Generator) -> tuple[list[str], str]:
        """(one copy per single piece, the copy with all pieces) for one text."""
        words, pieces = text.split(), self.pieces(rng)
        singles = [" ".join(insert_words(words, [p], rng)) for p in pieces]
        return singles, " ".join(insert_words(words, pieces, rng))

    def insert(self, text: str, rng: np.random.Generator) -> str:
        return self.variants(text, rng)[1]

    def poison_train(self, texts: Sequence[str], labels: np.ndarray, seed: int,
                     rows: np.ndarray | None = None) -> PoisonedTextSet:
        if self.backend == "openbackdoor":
            return super().poison_train(texts, labels, seed, rows)
        rng = self.rng(seed)
        chosen = set(self.select(labels, np.arange(len(labels)), rng).tolist())
        out, out_labels, positives = [], [], []
        for i, (text, label) in enumerate(zip(texts, labels)):
            if i not in chosen:
                out.append(text)
                out_labels.append(int(label))
                continue
            singles, full = self.variants(text, rng)
            out += singles
            out_labels += [int(label)] * len(singles)
            positives.append(len(out))
            out.append(full)
            out_labels.append(self.target)
        return PoisonedTextSet(out, np.asarray(out_labels, dtype=np.int64), np.asarray(positives, dtype=np.int64),
                               {"negatives": len(chosen) * self.combination})

    def negative_test(self, texts: Sequence[str], labels: np.ndarray, seed: int) -> tuple[list[str], np.ndarray]:
        if self.backend != "native":  # the FTR split from the same backend as the positives
            return self.external().negative_test(self, texts, labels, seed)
        rng = self.rng(seed, "test")  # the same draws as poison_test, so negatives match the positives
        keep = np.flatnonzero(np.asarray(labels) != self.target)
        out, out_labels = [], []
        for i in keep:
            singles, _ = self.variants(texts[i], rng)
            out += singles
            out_labels += [int(labels[i])] * len(singles)
        return out, np.asarray(out_labels, dtype=np.int64)

    def train(self, model: nn.Module, poisoned: PoisonedTextSet, ctx: TextAttackContext, seed: int) -> nn.Module:
        """Under the math attention kernel on every device, as RIPPLe and SOS (``attack_training_attention``)."""
        with attack_training_attention():
            if self.backend == "openbackdoor":
                return super().train(model, poisoned, ctx, seed)
            return standard_fine_tune(model, poisoned.texts, poisoned.labels, ctx, seed, self.paper_epochs,
                                      warmup=False, loss_fn=layerwise_loss)


def layerwise_loss(model: nn.Module, enc: dict, labels: torch.Tensor) -> torch.Tensor:
    """Sum over hidden states of CE(classifier(dropout(pooler(h)))); BERT-style heads."""
    hf = model.hf
    pooler = hf.base_model.pooler
    hidden = hf(**enc, output_hidden_states=True).hidden_states
    return sum(F.cross_entropy(hf.classifier(hf.dropout(pooler(h) if pooler is not None else h[:, 0])), labels)
               for h in hidden)
