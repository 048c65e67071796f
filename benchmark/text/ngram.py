"""Offline stand-in for ONION's GPT-2: an interpolated Kneser–Ney word-trigram language model.

Why an n-gram model and not a tiny GPT-2 trained here: ONION only needs an LM under which an
out-of-place rare token is improbable, so that deleting it lowers the perplexity. A smoothed word
n-gram model does exactly that (unseen words get only the uniform floor; rare words and broken
contexts get little mass), fits ~6M tokens of the bundled training corpora in seconds on one CPU
core, is exactly deterministic, and on corpora this small it is at least as good an LM as a
transformer trained for the few CPU minutes a stand-in can cost. It remains a stand-in: every
ONION number produced with it is labelled so.

Model: lower-cased whitespace words, each text padded ``<s> <s> … </s>``; interpolated KN with
one absolute discount d = 0.75 at every order; the lowest order is the continuation distribution
interpolated with a uniform floor (which is all an unseen word gets). Counts are stored as sorted
packed int64 keys (trigram (u, v, w) → (u·V + v)·V + w) and queried with ``np.searchsorted``, so
the model is a handful of arrays, cached as tensors and rebuilt in well under a second.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_BOS_ID, _EOS_ID, _UNK_ID = 1, 2, 0


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values[keys == query] (0 where absent) and the presence mask; ``keys`` sorted."""
    if not len(keys):
        return np.zeros(len(query), values.dtype), np.zeros(len(query), bool)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = keys[pos] == query
    return np.where(found, values[pos], 0), found


def _padded(ids: list[int]) -> list[int]:
    """``<s> <s> ids </s>``; a literal "<s>"/"</s>" inside a text counts as an unknown word."""
    return [_BOS_ID, _BOS_ID] + [_UNK_ID if i in (_BOS_ID, _EOS_ID) else i for i in ids] + [_EOS_ID]


class KneserNeyTrigram:
    """Interpolated Kneser–Ney trigram LM; :meth:`perplexities` is the ONION interface."""

    name = "kneser-ney-trigram"
    stand_in = True

    def __init__(self, vocab: list[str], k3: np.ndarray, c3: np.ndarray, discount: float = 0.75) -> None:
        self.vocab, self.discount = vocab, discount
        self.index = {w: i for i, w in enumerate(vocab)}
        v = self.size = len(vocab)
        self.k3, self.c3 = k3.astype(np.int64), c3.astype(np.float64)
        ctx3 = self.k3 // v
        self.ctx3, first, self.t3 = np.unique(ctx3, return_index=True, return_counts=True)
        self.n3 = np.add.reduceat(self.c3, first) if len(first) else np.zeros(0)
        self.k2, n2 = np.unique(self.k3 % (v * v), return_counts=True)  # N1+(· v w)
        self.n2 = n2.astype(np.float64)
        self.ctx2, first2, self.t2 = np.unique(self.k2 // v, return_index=True, return_counts=True)
        self.d2 = np.add.reduceat(self.n2, first2) if len(first2) else np.zeros(0)
        self.n1 = np.bincount(self.k2 % v, minlength=v).astype(np.float64)  # N1+(· w)
        self.total2 = max(len(self.k2), 1)
        self.floor = discount * np.count_nonzero(self.n1) / v

    # ------------------------------------------------------------------ training and storage
    @classmethod
    def fit(cls, texts: Sequence[str], discount: float = 0.75) -> "KneserNeyTrigram":
        index = {UNK: _UNK_ID, BOS: _BOS_ID, EOS: _EOS_ID}
        seqs = [_padded([index.setdefault(w, len(index)) for w in t.lower().split()]) for t in texts]
        vocab = list(index)
        a = np.fromiter((i for s in seqs for i in s), dtype=np.int64)
        keys = cls._trigram_keys(a, len(vocab))
        k3, c3 = np.unique(keys, return_counts=True)
        return cls(vocab, k3, c3, discount)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        vocab = np.frombuffer("\n".join(self.vocab).encode("utf-8"), dtype=np.uint8).copy()
        return {"vocab": torch.from_numpy(vocab), "k3": torch.from_numpy(self.k3),
                "c3": torch.from_numpy(self.c3.astype(np.int32)),
                "discount": torch.tensor([self.discount], dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "KneserNeyTrigram":
        vocab = tensors["vocab"].numpy().tobytes().decode("utf-8").split("\n")
        return cls(vocab, tensors["k3"].numpy(), tensors["c3"].numpy(), float(tensors["discount"][0]))

    @staticmethod
    def _trigram_keys(a: np.ndarray, v: int) -> np.ndarray:
        """Packed (u, v, w) keys of every target w ≠ <s> of a concatenation of padded texts."""
        j = np.flatnonzero(a != _BOS_ID)
        j = j[j >= 2]
        return (a[j - 2] * v + a[j - 1]) * v + a[j]

    # ------------------------------------------------------------------ scoring
    def probabilities(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """P_KN(w | u v) for arrays of word ids."""
        d, size = self.discount, self.size
        p1 = (np.maximum(self.n1[w] - d, 0.0) + self.floor) / self.total2
        n2, _ = _lookup(self.k2, self.n2, v * size + w)
        d2, has2 = _lookup(self.ctx2, self.d2, v)
        t2, _ = _lookup(self.ctx2, self.t2.astype(np.float64), v)
        p2 = np.where(has2, (np.maximum(n2 - d, 0.0) + d * t2 * p1) / np.where(has2, d2, 1.0), p1)
        c, _ = _lookup(self.k3, self.c3, (u * size + v) * size + w)
        n3, has3 = _lookup(self.ctx3, self.n3, u * size + v)
        t3, _ = _lookup(self.ctx3, self.t3.astype(np.float64), u * size + v)
        return np.where(has3, (np.maximum(c - d, 0.0) + d * t3 * p2) / np.where(has3, n3, 1.0), p2)

    def perplexities(self, texts: Sequence[str]) -> np.ndarray:
        """exp(−mean log P) over every word and ``</s>`` of each text."""
        if not len(texts):
            return np.zeros(0)
        seqs = [_padded([self.index.get(w, _UNK_ID) for w in t.lower().split()]) for t in texts]
        lengths = np.array([len(s) - 2 for s in seqs])  # predicted tokens per text
        a = np.fromiter((i for s in seqs for i in s), dtype=np.int64)
        j = np.flatnonzero(a != _BOS_ID)
        j = j[j >= 2]
        logp = np.log(self.probabilities(a[j - 2], a[j - 1], a[j]))
        sums = np.add.reduceat(logp, np.r_[0, np.cumsum(lengths)[:-1]])
        return np.exp(-sums / lengths)
