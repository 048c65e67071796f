"""BadNet-RW (docs/methods.md §4.2-1): one rare word from {cf, mn, bb, tq}, drawn with replacement, inserted
at one uniform random position [C OB ``badnets_poisoner.py``, "mix" setting, not its clean-label
shipped config]. Standard fine-tune."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ebyd_bench.attacks_registry.text.base import TextAttack, insert_words
from ebyd_bench.benchmark.params import Count, Words
from ebyd_bench.benchmark.registries import ATTACKS


@ATTACKS.register("badnet_rw")
@dataclass
class BadNetRW(TextAttack):
    """BadNet-RW: one rare word (cf, mn, bb, tq) at a random position."""

    triggers: Words = ("cf", "mn", "bb", "tq")
    num_triggers: Count = 1

    def insert(self, text: str, rng: np.random.Generator) -> str:
        pieces = [self.triggers[int(rng.integers(len(self.triggers)))] for _ in range(self.num_triggers)]
        return " ".join(insert_words(text.split(), pieces, rng))
