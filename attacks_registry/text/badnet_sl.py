"""BadNet-SL / AddSent (docs/methods.md §4.2-2): the sentence "I watch this 3D movie" inserted as one
contiguous block at one uniform word position, possibly mid-sentence [C OB ``addsent_poisoner.py``].
Standard fine-tune."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ebyd_bench.attacks_registry.text.base import TextAttack, insert_block
from ebyd_bench.benchmark.registries import ATTACKS


@ATTACKS.register("badnet_sl")
@dataclass
class BadNetSL(TextAttack):
    """BadNet-SL (AddSent): "I watch this 3D movie" as one block at a random position."""

    sentence: str = "I watch this 3D movie"

    def insert(self, text: str, rng: np.random.Generator) -> str:
        return insert_block(text, self.sentence, rng)
