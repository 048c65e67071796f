"""Blend: x' = trunc(0.8·x + 0.2·M) with a uniform-noise pattern M (docs/methods.md §3.3-4).

Choice made: one 32×32 pattern drawn once from the run seed and broadcast to the three channels,
used for every train and test poison ("Random Noise" in Table VIII). MTBA/PT redraw the noise for
every image, which leaves no fixed trigger to invert; ``per_image=True`` reproduces that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ebyd_bench.attacks_registry.base import ImageAttack, clip_uint8
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.params import PositiveFraction, Probability


@ATTACKS.register("blend")
@dataclass
class Blend(ImageAttack):
    """Blend one seeded uniform-noise pattern at weight 0.2; rate 0.10, target 0."""

    poison_rate: PositiveFraction = 0.10
    alpha: Probability = 0.2
    per_image: bool = False
    _pattern: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _rng: np.random.Generator | None = field(default=None, init=False, repr=False, compare=False)

    def setup(self, seed: int, ctx=None) -> None:
        self._rng = self.rng(seed)
        self._pattern = self._rng.integers(0, 256, size=(32, 32), dtype=np.int64)

    def apply(self, images: np.ndarray) -> np.ndarray:
        if self._pattern is None or self._rng is None:
            raise RuntimeError("Blend.setup(seed) must run before apply()")
        n = len(images)
        noise = (self._rng.integers(0, 256, size=(n, 32, 32, 1)) if self.per_image
                 else self._pattern[None, :, :, None])
        return clip_uint8((1 - self.alpha) * images.astype(np.float64) + self.alpha * noise)
