"""Length-grouped sentence batches: a permutation per epoch, shorter padding, seeded, off by default."""

import numpy as np
import torch

from ebyd_bench.benchmark.tensors import batches
from ebyd_bench.benchmark.text.batching import sentence_batches


def _texts(n: int = 1000) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(["w"] * int(k)) for k in rng.integers(1, 60, n)]


def _padded_tokens(texts, groups) -> int:
    return sum(max(len(texts[i].split()) for i in g.tolist()) * len(g) for g in groups)


def test_grouped_batches_cover_every_sentence_once_and_pad_less():
    texts = _texts()
    grouped = list(sentence_batches(texts, 32, torch.Generator().manual_seed(0), group_by_length=True))
    plain = list(sentence_batches(texts, 32, torch.Generator().manual_seed(0)))
    assert sorted(torch.cat(grouped).tolist()) == list(range(len(texts)))
    assert len(grouped) == len(plain)
    real = sum(len(t.split()) for t in texts)
    assert _padded_tokens(texts, grouped) < 1.1 * real < _padded_tokens(texts, plain)


def test_grouped_batches_are_seeded_and_the_default_is_plain_random_batches():
    texts = _texts(300)
    a = [b.tolist() for b in sentence_batches(texts, 16, torch.Generator().manual_seed(3), True)]
    b = [b.tolist() for b in sentence_batches(texts, 16, torch.Generator().manual_seed(3), True)]
    c = [b.tolist() for b in sentence_batches(texts, 16, torch.Generator().manual_seed(4), True)]
    assert a == b != c
    plain = [b.tolist() for b in sentence_batches(texts, 16, torch.Generator().manual_seed(3))]
    assert plain == [b.tolist() for b in batches(len(texts), 16, torch.Generator().manual_seed(3))]
