"""OnePixel: pixel (16, 16) set to 255 in all three channels (docs/methods.md §3.3-1, MTBA/PT)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ebyd_bench.attacks_registry.base import ImageAttack
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.params import NonNegativeInt, PositiveFraction


@ATTACKS.register("onepixel")
@dataclass
class OnePixel(ImageAttack):
    """Set pixel (row, col) = (16, 16) to white; rate 0.10, target 0 (Table VIII)."""

    poison_rate: PositiveFraction = 0.10
    row: NonNegativeInt = 16
    col: NonNegativeInt = 16

    def apply(self, images: np.ndarray) -> np.ndarray:
        out = images.copy()
        out[:, self.row, self.col, :] = 255
        return out
