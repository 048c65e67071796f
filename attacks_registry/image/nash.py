"""Nash: Instagram's Nashville filter as the trigger (docs/methods.md §3.3-8, MTBA ``nashTrigger``).

``pilgram.nashville`` (PyPI ``pilgram==1.2.1``, pinned: the filter's constants are the trigger) is
applied to each full RGB image through PIL: darken with RGBA (247, 176, 153, 0.56), lighten with
(0, 70, 150, 0.40), then sepia 0.2 → contrast 1.2 → brightness 1.05 → saturate 1.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ebyd_bench.attacks_registry.base import ImageAttack
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.params import PositiveFraction


def nashville(images: np.ndarray) -> np.ndarray:
    """Apply pilgram's Nashville filter to every uint8 NHWC image."""
    try:
        import pilgram
    except ImportError as exc:  # an optional dependency until installed; say how to get it
        raise ImportError("attack 'nash' needs pilgram: pip install pilgram==1.2.1") from exc
    from PIL import Image

    out = np.empty_like(images)
    for i, img in enumerate(images):
        out[i] = np.asarray(pilgram.nashville(Image.fromarray(np.ascontiguousarray(img))).convert("RGB"))
    return out


@ATTACKS.register("nash")
@dataclass
class Nash(ImageAttack):
    """Apply the Nashville filter (pilgram 1.2.1) to the whole image; rate 0.10, target 0."""

    poison_rate: PositiveFraction = 0.10

    def apply(self, images: np.ndarray) -> np.ndarray:
        return nashville(images)
