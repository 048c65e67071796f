"""BadNets: a 3×3 checkerboard in the bottom-right corner (docs/methods.md §3.3-2, MTBA pattern)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ebyd_bench.attacks_registry.base import ImageAttack
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.params import PositiveFraction

#: rows/cols 29–31; row 31 is (255, 0, 255) as in MTBA/PT/ANP, not CD/EBYD's (255, 255, 0)
GRID = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 255]], dtype=np.uint8)


@ATTACKS.register("badnets")
@dataclass
class BadNets(ImageAttack):
    """Stamp :data:`GRID` (all channels) at rows/cols 29–31; rate 0.10, target 0 (Table VIII)."""

    poison_rate: PositiveFraction = 0.10

    def apply(self, images: np.ndarray) -> np.ndarray:
        out = images.copy()
        out[:, 29:32, 29:32, :] = GRID[None, :, :, None]
        return out
