"""Mini-batches of sentences, optionally grouped by length (``group_by_length``).

Dynamic padding pads each batch to its longest sentence. With random batches of 32, the 2,000
SST-2 training sentences of ``configs/quick-text.yaml`` then carry 2.00× as many tokens as they
have (MiniLM word pieces, measured); grouped batches carry 1.04×. Grouping is Hugging Face
``Trainer``'s ``group_by_length``: shuffle, cut into mega-batches of ``group`` batches, sort each by
length (whitespace words), cut into batches, then shuffle the order of the batches. Every epoch
still sees every sentence once in a seeded random order of batches; what changes is which
sentences share a batch. Off by default (the paper's and OpenBackdoor's random batches).

Measured on ``configs/quick-text.yaml`` (seed 0, 2-core CPU): with grouped victim training each
victim trained in 182–277 s instead of 225–361 s. With seed 0, SOS's ASR fell from 1.00 to 0.77 and
Syntactic's from 0.82 to 0.75; with seed 1, grouped and random batches gave the same (SOS 1.00 both,
Syntactic 0.79 both), so that looks like batch-order noise on a borderline Syntactic. The preset
still groups only the methods that train on the 500 defense sentences (CUL, mask recovery, FT).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ebyd_bench.benchmark.tensors import batches

GROUP = 50  # batches per mega-batch, as Hugging Face's LengthGroupedSampler


def sentence_batches(texts: Sequence[str], batch_size: int, generator: torch.Generator,
                     group_by_length: bool = False) -> Iterator[torch.Tensor]:
    """Shuffled index batches over ``texts``; with ``group_by_length``, of sentences of similar length."""
    if not group_by_length:
        yield from batches(len(texts), batch_size, generator)
        return
    lengths = torch.tensor([len(t.split()) for t in texts])
    order = torch.randperm(len(texts), generator=generator)
    grouped = []
    for start in range(0, len(order), batch_size * GROUP):
        mega = order[start:start + batch_size * GROUP]
        mega = mega[torch.argsort(lengths[mega], descending=True, stable=True)]
        grouped.extend(mega[i:i + batch_size] for i in range(0, len(mega), batch_size))
    for j in torch.randperm(len(grouped), generator=generator).tolist():
        yield grouped[j]
