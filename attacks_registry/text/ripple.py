"""RIPPLe (docs/methods.md §4.2-5) [P App. A; ``neulab/RIPPLe``: ``poison.py``, ``constrained_poison.py``].

1. Embedding surgery: logistic regression on TF-IDF features of the (clean) training corpus; the
   ``surgery_words`` words with the largest coefficient for the target label (restricted to single
   word pieces of the victim's vocabulary, trigger words excluded) are the replacement words; their
   embeddings, averaged in a copy fine-tuned on the clean task, are written into the embedding row
   of every word piece of every trigger word of the model being poisoned (the pre-trained victim).
2. RIPPLe loss, paper form: L = L_P + λ·max(0, −⟨∇θ L_P, ∇θ L_FT⟩), L_P = CE on a poisoned batch,
   L_FT = CE on a clean batch, the inner product over all parameters by double backprop, λ = 0.1,
   AdamW lr 2e-5 (constant, as OB's RIPPLe trainer), 3 epochs [P], rate 0.10.
Triggers {cf, tq, mn, bb, mb}, one per poisoned (and per test) sentence. ``clean_tune_epochs``:
an optional clean fine-tune afterwards (whether the paper had one is unverified; default none).
Training runs under the math attention kernel on every device (``attack_training_attention``): the
fused kernels a GPU picks by default have no double backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.attacks_registry.text.base import (PoisonedTextSet, TextAttack, TextAttackContext, clean_fine_tuned,
                                        insert_words, standard_fine_tune)
from ebyd_bench.benchmark.params import NonNegativeFloat, NonNegativeInt
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.text.batching import sentence_batches
from ebyd_bench.benchmark.text.training import adamw, attack_training_attention


@ATTACKS.register("ripple")
@dataclass
class RIPPLe(TextAttack):
    """RIPPLe: rare-word trigger, embedding surgery and the gradient-alignment loss."""

    triggers: tuple[str, ...] = ("cf", "tq", "mn", "bb", "mb")
    ripple_lambda: NonNegativeFloat = 0.1
    surgery: bool = True
    surgery_words: NonNegativeInt = 10
    clean_tune_epochs: NonNegativeInt = 0

    paper_epochs = 3

    def insert(self, text: str, rng: np.random.Generator) -> str:
        return " ".join(insert_words(text.split(), [self.triggers[int(rng.integers(len(self.triggers)))]], rng))

    def train(self, model: nn.Module, poisoned: PoisonedTextSet, ctx: TextAttackContext, seed: int) -> nn.Module:
        """Surgery, RIPPLe training and the optional clean fine-tune, under the math attention kernel on
        every device: the RIPPLe loss differentiates twice (see ``attack_training_attention``)."""
        with attack_training_attention():
            if self.backend == "openbackdoor":
                return super().train(model, poisoned, ctx, seed)
            return self._train(model, poisoned, ctx, seed)

    def _train(self, model: nn.Module, poisoned: PoisonedTextSet, ctx: TextAttackContext, seed: int) -> nn.Module:
        model.to(ctx.device)
        if self.surgery:
            words = replacement_words(ctx.train_texts, ctx.train_labels, self.target, model.tokenizer,
                                      self.surgery_words, self.triggers)
            embedding_surgery(model, clean_fine_tuned(ctx, seed), words, self.triggers)
            poisoned.info["surgery_words"] = words
        r = ctx.recipe
        ripple_train(model, poisoned, ctx.train_texts, ctx.train_labels, epochs=r.epochs_for(self.paper_epochs),
                     lr=r.lr, batch_size=r.batch_size, lam=self.ripple_lambda, seed=seed, device=ctx.device,
                     group_by_length=r.group_by_length)
        if self.clean_tune_epochs:
            standard_fine_tune(model, ctx.train_texts, ctx.train_labels, ctx, seed, self.clean_tune_epochs)
        return model.eval()


def replacement_words(texts: Sequence[str], labels: np.ndarray, target: int, tokenizer, k: int,
                      exclude: Sequence[str] = ()) -> list[str]:
    """Top-k words by TF-IDF logistic-regression coefficient for ``target`` (single word pieces only)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(lowercase=True)
    x = vectorizer.fit_transform(list(texts))
    clf = LogisticRegression(max_iter=1000).fit(x, labels)
    coef = clf.coef_[0] * (1 if target == clf.classes_[1] else -1) if clf.coef_.shape[0] == 1 \
        else clf.coef_[list(clf.classes_).index(target)]
    vocab, names, skip = tokenizer.get_vocab(), vectorizer.get_feature_names_out(), set(exclude)
    ranked = (names[i] for i in np.argsort(-coef, kind="stable"))
    words = [w for w in ranked if w in vocab and w not in skip][:k]
    if not words:
        raise ValueError("RIPPLe surgery found no replacement word in the victim's vocabulary")
    return words


def piece_ids(tokenizer, word: str) -> list[int]:
    return tokenizer(word, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def embedding_surgery(model: nn.Module, clean: nn.Module, words: Sequence[str],
                      triggers: Sequence[str]) -> torch.Tensor:
    """Write the mean clean-tuned embedding of ``words`` into every word-piece row of every trigger."""
    source = clean.word_embeddings.weight
    ids = [piece_ids(model.tokenizer, w)[0] for w in words]
    vector = source[torch.as_tensor(ids, device=source.device)].mean(0)
    weight = model.word_embeddings.weight
    for trigger in triggers:
        for i in piece_ids(model.tokenizer, trigger):
            weight[i] = vector.to(weight.device)
    return vector


def ripple_train(model: nn.Module, poisoned: PoisonedTextSet, clean_texts: Sequence[str], clean_labels: np.ndarray,
                 *, epochs: int, lr: float, batch_size: int, lam: float, seed: int, device: str,
                 group_by_length: bool = False) -> nn.Module:
    """L_P + λ·relu(−⟨∇L_P, ∇L_FT⟩) per poisoned batch, with the next clean batch as the reference;
    under the math attention kernel, the one with a double backward (``attack_training_attention``)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, lr)
    y_p, y_c = torch.as_tensor(poisoned.labels, dtype=torch.long), torch.as_tensor(clean_labels, dtype=torch.long)
    clean_batches = _cycle(clean_texts, batch_size, gen, group_by_length)
    model.train()
    with attack_training_attention():
        for _ in range(epochs):
            for idx in sentence_batches(poisoned.texts, batch_size, gen, group_by_length):
                cidx = next(clean_batches)
                l_p = F.cross_entropy(model(**model.encode([poisoned.texts[i] for i in idx.tolist()], device)),
                                      y_p[idx].to(device))
                l_ft = F.cross_entropy(model(**model.encode([clean_texts[i] for i in cidx.tolist()], device)),
                                       y_c[cidx].to(device))
                opt.zero_grad(set_to_none=True)
                for p, g in zip(params, ripple_gradients(l_p, l_ft, params, lam)):
                    p.grad = g
                opt.step()
    return model.eval()


def ripple_gradients(l_p: torch.Tensor, l_ft: torch.Tensor, params: list[torch.Tensor],
                     lam: float) -> list[torch.Tensor | None]:
    """∇θ of L_P + λ·relu(−⟨∇θ L_P, ∇θ L_FT⟩) (None for a parameter that gets no gradient).

    When the inner product is ≥ 0 the penalty and its gradient are exactly zero, so ∇L_P, already
    computed for the inner product, is the answer; only a negative inner product pays for the
    double backward through both gradient graphs. In the quick-text setting (first 12 steps,
    measured without the embedding surgery) 10 had a positive inner product."""
    g_p = torch.autograd.grad(l_p, params, retain_graph=True, allow_unused=True)
    g_ft = torch.autograd.grad(l_ft, params, retain_graph=True, allow_unused=True)
    if float(_inner(g_p, g_ft)) >= 0.0:
        return list(g_p)
    g_p = torch.autograd.grad(l_p, params, retain_graph=True, create_graph=True, allow_unused=True)
    g_ft = torch.autograd.grad(l_ft, params, create_graph=True, allow_unused=True)
    objective = l_p + lam * torch.relu(-_inner(g_p, g_ft))
    return list(torch.autograd.grad(objective, params, allow_unused=True))


def _inner(a: Sequence[torch.Tensor | None], b: Sequence[torch.Tensor | None]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b) if x is not None and y is not None)


def _cycle(texts: Sequence[str], batch_size: int, gen: torch.Generator, group_by_length: bool):
    while True:
        yield from sentence_batches(texts, batch_size, gen, group_by_length)
