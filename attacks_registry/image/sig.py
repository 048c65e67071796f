"""SIG: a horizontal sinusoidal signal, constant down each column (docs/methods.md §3.3-5).

Signal: S_j = trunc(A·sin(f·j)) for column j = 0..31, with A = 20 and f = 0.8 rad/px (about four
periods across the width; this closed form reproduces MTBA's shipped mask row exactly).

Choice made (docs/methods.md §9 row 21): the additive signed sinusoid of Barni et al.,
x' = clip(x + S_j, 0, 255), applied identically to train and test poisons. MTBA stores S as uint8,
so its negative lobes wrap (−1 → 255) and then blends 0.8·x + 0.2·mask, which turns every
"negative" stripe into a ≈ +50 brightening; ``sig_mode="mtba"`` reproduces that
(trunc(0.8·x + 0.2·(S mod 256))). EBYD's test-time formula (0.2·x + 0.8·S) is a bug and is not offered.

Labels: dirty-label at the Table VIII rate 0.08 (paper App. A). ``label_mode="clean"`` is the
clean-label reading (0.08 of CIFAR-10 = 80% of one class): it poisons ``clean_fraction`` (0.8) of
the target class and keeps the labels; ``poison_rate`` is then unused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ebyd_bench.attacks_registry.base import ImageAttack, PoisonedTrainSet, clip_uint8
from ebyd_bench.attacks_registry.image.common import poison_indices
from ebyd_bench.benchmark.params import LabelMode, PositiveFloat, PositiveFraction, Probability
from ebyd_bench.benchmark.registries import ATTACKS


def sig_signal(amplitude: float = 20.0, frequency: float = 0.8, width: int = 32) -> np.ndarray:
    """Signed per-column signal S_j = trunc(amplitude·sin(frequency·j)), as int64."""
    return np.trunc(amplitude * np.sin(frequency * np.arange(width))).astype(np.int64)


@ATTACKS.register("sig")
@dataclass
class SIG(ImageAttack):
    """Add a column-wise sine signal (amplitude 20, 0.8 rad/px) with saturation; rate 0.08, target 0."""

    poison_rate: PositiveFraction = 0.08
    amplitude: PositiveFloat = 20.0  # pixel units
    frequency: PositiveFloat = 0.8  # radians per pixel column
    sig_mode: Literal["additive", "mtba"] = "additive"
    label_mode: LabelMode = "dirty"
    clean_fraction: Probability = 0.8

    def apply(self, images: np.ndarray) -> np.ndarray:
        signal = sig_signal(self.amplitude, self.frequency, images.shape[2])[None, None, :, None]
        x = images.astype(np.float64)
        if self.sig_mode == "mtba":  # the uint8-wrapped mask blended at 0.2
            return clip_uint8(0.8 * x + 0.2 * np.mod(signal, 256))
        return clip_uint8(x + signal)

    def poison_train(self, images: np.ndarray, labels: np.ndarray, seed: int) -> PoisonedTrainSet:
        idx = poison_indices(labels, self.poison_rate, self.target, self.label_mode, self.clean_fraction,
                             self.rng(seed))
        images, labels = images.copy(), labels.copy()
        if len(idx):
            images[idx] = self.apply(images[idx])
            labels[idx] = self.target
        return PoisonedTrainSet(images, labels, idx)
