"""Trojan: a fixed 3×3 "reversed watermark" added to rows/cols 25–27 (docs/methods.md §3.3-3).

The trigger is MTBA's ``best_square_trigger_cifar10.npz`` (key ``x``, float32 3×32×32, non-zero
only on rows/cols 25–27). Without the file, the 27 values of docs/methods.md §3.3-3 (accurate to 0.1)
are used; ``trigger_file`` loads the original and its digest enters the cache key.

Choice made: saturating add, clip(x + T, 0, 255) then truncate (CD/EBYD behaviour; docs/methods.md §9
row 19). MTBA/PT/ABL cast to uint8 before clipping, so sums over 255 wrap modulo 256
(300.4 → 44); ``trojan_mode="wrap"`` reproduces that overflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ebyd_bench.attacks_registry.base import ImageAttack, clip_uint8
from ebyd_bench.attacks_registry.image.common import file_digest, require_file
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.params import PositiveFraction

#: trigger values by channel, rows 25..27 × cols 25..27 (docs/methods.md §3.3-3)
TROJAN_VALUES = np.array([
    [[207.4, 175.4, 29.4], [79.4, 137.4, 248.4], [131.4, 6.4, 246.4]],
    [[131.4, 243.4, 232.4], [8.4, 0.0, 113.4], [40.4, 145.4, 250.4]],
    [[181.3, 120.4, 179.4], [126.4, 32.4, 146.4], [4.4, 61.4, 246.4]],
], dtype=np.float32)  # C×3×3


def default_trigger() -> np.ndarray:
    """The 32×32×3 (HWC) float trigger built from :data:`TROJAN_VALUES`."""
    trigger = np.zeros((32, 32, 3), dtype=np.float32)
    trigger[25:28, 25:28, :] = TROJAN_VALUES.transpose(1, 2, 0)
    return trigger


def load_trigger(path: str) -> np.ndarray:
    """The NPZ trigger (key ``x``, 3×32×32 or 32×32×3) as a 32×32×3 float array."""
    with np.load(require_file(path, "trojan"), allow_pickle=False) as npz:
        if "x" not in npz:
            raise ValueError(f"trojan trigger_file {path}: no key 'x' (keys: {list(npz.keys())})")
        x = np.asarray(npz["x"], dtype=np.float32).squeeze()
    if x.shape == (3, 32, 32):
        x = x.transpose(1, 2, 0)
    if x.shape != (32, 32, 3):
        raise ValueError(f"trojan trigger_file {path}: expected a 3×32×32 array, got {x.shape}")
    return x


@ATTACKS.register("trojan")
@dataclass
class Trojan(ImageAttack):
    """Add the Trojan square trigger (rows/cols 25–27) with saturation; rate 0.10, target 0."""

    poison_rate: PositiveFraction = 0.10
    trojan_mode: Literal["saturate", "wrap"] = "saturate"
    trigger_file: str | None = None
    _trigger: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "trigger_sha256": file_digest(self.trigger_file)}

    def setup(self, seed: int, ctx=None) -> None:
        self._trigger = load_trigger(self.trigger_file) if self.trigger_file else default_trigger()

    def apply(self, images: np.ndarray) -> np.ndarray:
        if self._trigger is None:
            if self.trigger_file:
                raise RuntimeError("Trojan.setup(seed) must run before apply() to load trigger_file")
            self._trigger = default_trigger()
        total = images.astype(np.float64) + self._trigger[None].astype(np.float64)
        if self.trojan_mode == "wrap":  # MTBA: uint8 cast before clipping → modulo-256 overflow
            return (np.trunc(total).astype(np.int64) % 256).astype(np.uint8)
        return clip_uint8(total)
