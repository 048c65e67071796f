"""No attack: a clean model trained with the same recipe, data and seed as the backdoored ones.

Grids list it to get the clean controls that model-level detection needs (docs/methods.md §6.3);
its ASR is undefined and recorded as null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from ebyd_bench.attacks_registry.base import ImageAttack
from ebyd_bench.benchmark.params import NoPoison
from ebyd_bench.benchmark.registries import ATTACKS


@ATTACKS.register("none")
@dataclass
class NoAttack(ImageAttack):
    """Clean control model (no poisoning)."""

    poison_rate: NoPoison = 0.0  # a clean control poisons nothing
    is_clean: ClassVar[bool] = True

    def apply(self, images: np.ndarray) -> np.ndarray:
        return images.copy()
