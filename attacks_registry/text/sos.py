"""SOS (docs/methods.md §4.2-4) [C OB ``sos_poisoner.py``, ``sos_trainer.py``; ``lancopku/SOS``].

1. Clean fine-tune of the victim (standard recipe; cached, shared with RIPPLe).
2. Shuffle the training set; T = target-class samples, N = the others. Poisoned: the first
   ⌊rate·|train|⌋ of N (capped at |T|), each of the 3 words at its own random position, label →
   target. Negatives: the first ⌊0.1·|T|⌋ of T and ⌊0.1·|N|⌋ of N, one copy per two-word subset,
   original labels. The SOS training set is poisoned + negatives only.
3. Embedding-only training (5 epochs, lr 5e-2): after each batch's backward, with g_i the gradient
   row of trigger word i (its first word piece) and m = min_i ‖g_i‖, w_i ← w_i − lr·g_i·m/‖g_i‖,
   then w_i is rescaled to its original norm. Gradients are never zeroed (they accumulate, as in
   the original). Only those 3 rows change, so only the embedding matrix needs a gradient.
Test trigger: the sentence "I have bought it from a store with my friends last weekend" as one
block; ``test-neg``: one copy of every test sample per two-word subset.
Training (clean fine-tune included) runs under the math attention kernel on every device, as RIPPLe's
(``attack_training_attention``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.attacks_registry.text.base import (PoisonedTextSet, TextAttack, TextAttackContext, clean_fine_tuned,
                                        insert_block, insert_words)
from ebyd_bench.benchmark.params import Count, PositiveFloat, Probability
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.text.batching import sentence_batches
from ebyd_bench.benchmark.text.training import attack_training_attention


@ATTACKS.register("sos")
@dataclass
class SOS(TextAttack):
    """SOS: 3 trigger words (friends, weekend, store), negatives, embedding-only poisoning."""

    triggers: tuple[str, ...] = ("friends", "weekend", "store")
    test_sentence: str = "I have bought it from a store with my friends last weekend"
    negative_rate: Probability = 0.1
    sos_epochs: Count = 5
    sos_lr: PositiveFloat = 5e-2

    has_negatives = True

    def subsets(self) -> list[tuple[str, ...]]:
        """The two-word (len−1) subsets, in the order of the word each one leaves out."""
        return [tuple(t for t in self.triggers if t != left_out) for left_out in self.triggers]

    def insert(self, text: str, rng: np.random.Generator) -> str:
        return insert_block(text, self.test_sentence, rng)

    def poison_train(self, texts: Sequence[str], labels: np.ndarray, seed: int,
                     rows: np.ndarray | None = None) -> PoisonedTextSet:
        if self.backend == "openbackdoor":
            return super().poison_train(texts, labels, seed, rows)
        rng = self.rng(seed)
        order = rng.permutation(len(labels))
        target = [int(i) for i in order if labels[i] == self.target]
        other = [int(i) for i in order if labels[i] != self.target]
        n_poison = min(int(np.floor(self.poison_rate * len(labels))), len(target), len(other))
        out = [" ".join(insert_words(texts[i].split(), self.triggers, rng)) for i in other[:n_poison]]
        out_labels = [self.target] * n_poison
        negatives = target[:int(self.negative_rate * len(target))] + other[:int(self.negative_rate * len(other))]
        for subset in self.subsets():
            out += [" ".join(insert_words(texts[i].split(), subset, rng)) for i in negatives]
            out_labels += [int(labels[i]) for i in negatives]
        return PoisonedTextSet(out, np.asarray(out_labels, dtype=np.int64), np.arange(n_poison),
                               {"negatives": len(out) - n_poison, "source_indices": other[:n_poison],
                                "negative_sources": negatives})

    def negative_test(self, texts: Sequence[str], labels: np.ndarray, seed: int) -> tuple[list[str], np.ndarray]:
        if self.backend != "native":  # the FTR split from the same backend as the positives
            return self.external().negative_test(self, texts, labels, seed)
        rng = self.rng(seed, "test-neg")
        out = [" ".join(insert_words(t.split(), s, rng)) for s in self.subsets() for t in texts]
        return out, np.tile(np.asarray(labels), len(self.triggers))

    def train(self, model: nn.Module, poisoned: PoisonedTextSet, ctx: TextAttackContext, seed: int) -> nn.Module:
        """Under the attention kernel RIPPLe needs, on every device (``attack_training_attention``), so
        the clean fine-tune SOS shares with RIPPLe is computed the same way whichever attack builds it."""
        with attack_training_attention():
            if self.backend == "openbackdoor":
                return super().train(model, poisoned, ctx, seed)
            clean = clean_fine_tuned(ctx, seed)
            return sos_embedding_training(clean, poisoned.texts, poisoned.labels, self.trigger_ids(clean),
                                          self.sos_epochs, self.sos_lr, ctx.recipe.batch_size, seed, ctx.device,
                                          ctx.recipe.group_by_length)

    def trigger_ids(self, model: nn.Module) -> list[int]:
        """The first word piece of each trigger word."""
        return [model.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in self.triggers]


def sos_embedding_training(model: nn.Module, texts: Sequence[str], labels: np.ndarray, ids: list[int],
                           epochs: int, lr: float, batch_size: int, seed: int, device: str,
                           group_by_length: bool = False) -> nn.Module:
    """The norm-preserving, min-gradient-scaled update of the trigger rows; see the module docstring."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    weight = model.word_embeddings.weight
    for p in model.parameters():
        p.requires_grad_(p is weight)
    rows = torch.as_tensor(ids, device=weight.device)
    norms = weight.detach()[rows].norm(dim=1)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    for _ in range(epochs):
        for idx in sentence_batches(texts, batch_size, gen, group_by_length):
            enc = model.encode([texts[i] for i in idx.tolist()], device)
            F.cross_entropy(model(**enc), y_all[idx].to(device)).backward()  # accumulates: never zeroed
            g = weight.grad[rows]
            g_norm = g.norm(dim=1, keepdim=True)
            if bool((g_norm == 0).any()):
                continue  # m = 0: the update is zero for every row
            with torch.no_grad():
                new = weight[rows] - lr * g * g_norm.min() / g_norm
                weight[rows] = new * (norms / new.norm(dim=1)).unsqueeze(1)
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    return model.eval()
