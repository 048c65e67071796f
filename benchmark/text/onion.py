"""ONION — perplexity-based word removal (docs/methods.md §7.4-2) [C OB ``onion_defender.py``; ``thunlp/ONION``].

Per input, split on spaces; p₀ = perplexity of the text, p_i = perplexity without word i; remove
every word with f_i = p₀ − p_i > bar. [D] bar = 0 with a strict ">" (words whose removal does not
change the perplexity stay), texts of ≤ 1 word are kept unchanged (never dropped), no truncation
below the LM's context. ONION filters inputs and leaves the model untouched: the harness measures
CACC on filtered clean inputs and ASR on filtered poisoned inputs.

LM: ``lm`` is a causal LM by hub name or local path (``gpt2``, the paper's; see
:mod:`ebyd_bench.benchmark.text.hf_lm`), or ``ngram`` — the offline stand-in of :mod:`ebyd_bench.benchmark.text.ngram`,
a Kneser–Ney trigram model the harness trains once on the training splits of the bundled text
corpora and caches (``ctx.offline_lm``; the defense itself never opens data or cache files).
Every cell it produces carries a stand-in note.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from torch import nn

from ebyd_bench.benchmark.errors import BenchmarkError
from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, FiniteFloat
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.benchmark.text.common import FilteredClassifier

class LanguageModel(Protocol):
    name: str
    stand_in: bool

    def perplexities(self, texts: Sequence[str]) -> np.ndarray: ...


def onion_filter(texts: Sequence[str], lm: LanguageModel, bar: float = 0.0,
                 token_budget: int = 2_000_000) -> list[str]:
    """ONION-processed copies of ``texts``; the LM is queried in chunks of about ``token_budget`` words."""
    out: list[str] = []
    chunk: list[list[str]] = []
    cost = 0
    for text in texts:
        words = text.split()
        chunk.append(words)
        cost += (len(words) + 1) * len(words)
        if cost >= token_budget:
            out += _filter_chunk(chunk, lm, bar)
            chunk, cost = [], 0
    return out + _filter_chunk(chunk, lm, bar)


def _filter_chunk(chunk: list[list[str]], lm: LanguageModel, bar: float) -> list[str]:
    variants, starts = [], []
    for words in chunk:
        starts.append(len(variants))
        if len(words) > 1:
            variants.append(" ".join(words))
            variants += [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
    ppl = lm.perplexities(variants) if variants else np.zeros(0)
    out = []
    for words, start in zip(chunk, starts):
        if len(words) <= 1:
            out.append(" ".join(words))
            continue
        suspicion = ppl[start] - ppl[start + 1:start + 1 + len(words)]
        out.append(" ".join(w for w, f in zip(words, suspicion) if not f > bar))
    return out


@DEFENSES.register("onion")
@dataclass
class Onion(Defense):
    """ONION (text): drop words whose removal lowers LM perplexity (GPT-2, or lm=ngram offline stand-in)."""

    domain = "text"
    category = "input_filtering"

    lm: str = "gpt2"  # causal LM hub name or path; "ngram" = offline Kneser–Ney stand-in
    bar: FiniteFloat = 0.0
    batch_size: Count = 32

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        lm = self.language_model(ctx)
        fields = {"onion_lm": lm.name, "onion_bar": self.bar}
        if lm.stand_in:
            fields["note"] = f"ONION used the offline {lm.name} LM as a stand-in for GPT-2"
        return DefenseResult(FilteredClassifier(model, functools.partial(onion_filter, lm=lm, bar=self.bar)), fields)

    def language_model(self, ctx: MethodContext) -> LanguageModel:
        if self.lm == "ngram":
            provider = getattr(ctx, "offline_lm", None)
            if provider is None:
                raise BenchmarkError("onion lm=ngram needs the harness's offline LM (TextMethodContext.offline_lm)")
            return provider()
        from ebyd_bench.benchmark.text.hf_lm import HFCausalLM

        return HFCausalLM(self.lm, ctx.device, self.batch_size)
