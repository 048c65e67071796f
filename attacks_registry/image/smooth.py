"""Smooth: Zeng et al.'s low-frequency universal trigger (docs/methods.md §3.3-7, MTBA ``smoothTrigger``).

x' = trunc(255 · minmax(x/255 + U)), where U = ``best_universal.npy[0]`` (float32 32×32×3 in
[0, 0.2]) and minmax rescales each whole image (all channels jointly) to [0, 1].

The pattern U is an optimised artefact that is not bundled and cannot be fetched offline:
``trigger_file`` is required, and ``setup`` refuses to run without it. Choice made (docs/methods.md §9
row 25): never substitute a regenerated pattern. The file's SHA-256 enters the cache key (its path does
not, so copies of the file in different places share one cached model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ebyd_bench.attacks_registry.base import ImageAttack, clip_uint8
from ebyd_bench.attacks_registry.image.common import file_digest, require_file
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.params import PositiveFraction

UNAVAILABLE = (
    "attack 'smooth' is unavailable: it needs trigger_file=<path to best_universal.npy>, the optimised "
    "universal trigger of Zeng et al. (ICCV'21), published as "
    "YiZeng623/frequency-backdoor:Sec5_Smooth_Trigger/data/best_universal.npy (the same blob MTBA uses). "
    "It is not bundled and no regenerated substitute is used (docs/methods.md §3.3-7)."
)


def load_universal(path: str) -> np.ndarray:
    """U as a float64 32×32×3 array: ``best_universal.npy[0]`` (a bare 32×32×3 array also works)."""
    u = np.load(require_file(path, "smooth"), allow_pickle=False)
    if u.ndim == 4:
        u = u[0]
    if u.shape != (32, 32, 3):
        raise ValueError(f"smooth trigger_file {path}: expected N×32×32×3 or 32×32×3, got {u.shape}")
    return u.astype(np.float64)


def smooth_apply(images: np.ndarray, universal: np.ndarray) -> np.ndarray:
    """trunc(255·minmax(x/255 + U)) per image, min and max taken over all pixels and channels."""
    v = images.astype(np.float64) / 255.0 + universal[None]
    lo = v.min(axis=(1, 2, 3), keepdims=True)
    span = v.max(axis=(1, 2, 3), keepdims=True) - lo
    return clip_uint8(255.0 * (v - lo) / np.where(span > 0, span, 1.0))


@ATTACKS.register("smooth")
@dataclass
class Smooth(ImageAttack):
    """Add Zeng et al.'s smooth universal trigger and min-max rescale; needs ``trigger_file``."""

    poison_rate: PositiveFraction = 0.10
    trigger_file: str | None = None
    needs: ClassVar[str] = "file"
    _universal: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "trigger_sha256": file_digest(self.trigger_file)}

    def setup(self, seed: int, ctx=None) -> None:
        if not self.trigger_file:
            raise ValueError(UNAVAILABLE)
        self._universal = load_universal(self.trigger_file)

    def apply(self, images: np.ndarray) -> np.ndarray:
        if self._universal is None:
            raise RuntimeError("Smooth.setup(seed) must run (with trigger_file) before apply()")
        return smooth_apply(images, self._universal)
