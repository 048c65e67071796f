"""WaNet: a fixed smooth warp of the image (docs/methods.md §3.3-10).

Choice made: one warp field per seed with k = 4 control points and strength s = 0.5 (the original
WaNet), identical for every train and test poison, data poisoning only. MTBA/PT draw a new grid for
every image (k = 32), which makes the "trigger" a random blur; ``per_image=True`` reproduces it.

Two options of the original (VIN-WA ``train.py``), both off by default (docs/methods.md §3.3-10):

* ``noise_mode`` — besides the ⌊rate·N⌋ poisons, ⌊cross_ratio·rate·N⌋ further training images
  (cross_ratio 2, VIN-WA's default) are warped with the fixed field plus per-pixel uniform noise in
  [−1, 1]/H added to the sampling grid, and keep their true label, so that the victim learns the
  exact warp rather than any warp. VIN-WA redraws these "noise" samples and their noise in every
  batch of every epoch; as data poisoning they are drawn once, when the training set is built.
* ``all_to_all`` — the backdoor label of a poison is (y + 1) mod K instead of ``target`` (a reading
  of Table VIII's "0→1", docs/methods.md §3.2). VIN-WA's ``all2all`` branch computes
  ``torch.remainder(targets, K)``, which leaves the labels unchanged; the +1 of VIN-IA's
  ``all2all_mask`` is applied. Poisoning only: the grid harness scores one target label
  (docs/methods.md §1.3), so a grid run stops before training such a victim (``setup`` with a
  harness context raises) rather than report an all-to-one ASR for it.

Neither option enters the cache key while it is off, so the keys of existing models are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ebyd_bench.attacks_registry.base import ImageAttack, PoisonedTrainSet, clip_uint8
from ebyd_bench.benchmark.errors import ConfigError
from ebyd_bench.benchmark.params import Count, NonNegativeFloat, PositiveFloat, PositiveFraction
from ebyd_bench.benchmark.registries import ATTACKS


def warp_field(rng: np.random.Generator, k: int, s: float, size: int = 32) -> torch.Tensor:
    """A 1×H×W×2 sampling grid: identity + s·(upsampled k×k noise normalised by its mean |·|)/H."""
    noise = torch.as_tensor(rng.uniform(-1, 1, size=(1, 2, k, k)), dtype=torch.float32)
    noise = noise / noise.abs().mean()
    noise = F.interpolate(noise, size=size, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    lin = torch.linspace(-1, 1, size)
    rows, cols = torch.meshgrid(lin, lin, indexing="ij")
    identity = torch.stack((cols, rows), dim=2)[None]  # grid_sample wants (x, y)
    return torch.clamp(identity + s * noise / size, -1, 1)


def _warp(images: np.ndarray, grid_for: Callable[[int, int], torch.Tensor]) -> np.ndarray:
    """Resample uint8 NHWC ``images`` bilinearly, chunk by chunk, through ``grid_for(start, n)`` (the n×H×W×2
    sampling grid of images start..start+n), then clip and truncate to uint8."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).double() / 255.0
    out = []
    for start in range(0, len(x), 1024):
        chunk = x[start:start + 1024]
        out.append(F.grid_sample(chunk, grid_for(start, len(chunk)).double(), mode="bilinear", align_corners=True))
    warped = torch.cat(out).permute(0, 2, 3, 1).numpy() if out else x.permute(0, 2, 3, 1).numpy()
    return clip_uint8(warped * 255.0)


@ATTACKS.register("wanet")
@dataclass
class WaNet(ImageAttack):
    """Warp every poison with one fixed smooth field (k = 4, s = 0.5); rate 0.08, target 0."""

    poison_rate: PositiveFraction = 0.08
    k: Count = 4
    s: PositiveFloat = 0.5
    per_image: bool = False
    noise_mode: bool = False
    cross_ratio: NonNegativeFloat = 2.0
    all_to_all: bool = False
    _grid: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _rng: np.random.Generator | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise_mode and self.per_image:
            raise ValueError("wanet: noise_mode perturbs the one fixed warp field, so it needs per_image=False")

    def key_params(self) -> dict[str, Any]:
        params = super().key_params()
        off = {"noise_mode", "cross_ratio"} if not self.noise_mode else set()
        off |= {"all_to_all"} if not self.all_to_all else set()
        return {k: v for k, v in params.items() if k not in off}

    def setup(self, seed: int, ctx=None) -> None:
        if self.all_to_all and ctx is not None:
            raise ConfigError("wanet: all_to_all is poisoning only (WaNet.poison_train in Python); the grid harness "
                              "scores a single target label (docs/methods.md §1.3) and cannot evaluate an all-to-all "
                              "backdoor")
        self._rng = self.rng(seed)
        self._grid = warp_field(self._rng, self.k, self.s)

    def apply(self, images: np.ndarray) -> np.ndarray:
        if self._grid is None or self._rng is None:
            raise RuntimeError("WaNet.setup(seed) must run before apply()")
        return _warp(images, lambda start, n: (torch.cat([warp_field(self._rng, self.k, self.s) for _ in range(n)])
                                               if self.per_image else self._grid.expand(n, -1, -1, -1)))

    def noise_warp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The noise-mode warp: the fixed field plus per-pixel uniform noise in [−1, 1]/H on the sampling
        grid, clamped to [−1, 1] (VIN-WA ``grid_temps2``), a fresh draw for every image."""
        if self._grid is None:
            raise RuntimeError("WaNet.setup(seed) must run before noise_warp()")
        size = self._grid.shape[1]
        noise = torch.as_tensor(rng.uniform(-1, 1, size=(len(images), size, size, 2)), dtype=torch.float64)
        grids = torch.clamp(self._grid.double() + noise / size, -1, 1)
        return _warp(images, lambda start, n: grids[start:start + n])

    def backdoor_labels(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """The label a poison of each true label gets: the target, or (y + 1) mod K with ``all_to_all``."""
        labels = np.asarray(labels)
        return (labels + 1) % num_classes if self.all_to_all else np.full_like(labels, self.target)

    def poison_train(self, images: np.ndarray, labels: np.ndarray, seed: int) -> PoisonedTrainSet:
        """The base poisoning (same indices); with ``noise_mode`` also the noise-warped samples, with
        ``all_to_all`` the (y + 1) mod K labels (K = the largest training label + 1)."""
        if not (self.noise_mode or self.all_to_all):
            return super().poison_train(images, labels, seed)
        rng = self.rng(seed)
        n_poison = int(np.floor(self.poison_rate * len(labels)))
        idx = np.sort(rng.choice(len(labels), size=n_poison, replace=False))  # = ImageAttack.poison_train
        images, labels = images.copy(), labels.copy()
        if self.noise_mode:
            rest = np.setdiff1d(np.arange(len(labels)), idx)
            n_noise = min(int(np.floor(self.cross_ratio * n_poison)), len(rest))
            noise_idx = np.sort(rng.choice(rest, size=n_noise, replace=False))
            if n_noise:
                images[noise_idx] = self.noise_warp(images[noise_idx], rng)  # true labels kept
        if n_poison:
            images[idx] = self.apply(images[idx])
            labels[idx] = self.backdoor_labels(labels[idx], int(labels.max()) + 1)
        return PoisonedTrainSet(images, labels, idx)
