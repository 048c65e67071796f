"""WaNet: a fixed smooth warp of the image (docs/methods.md §3.3-10).

Choice made: one warp field per seed with k = 4 control points and strength s = 0.5 (the original
WaNet), identical for every train and test poison, data poisoning only. MTBA/PT draw a new grid for
every image (k = 32), which makes the "trigger" a random blur; ``per_image=True`` reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ebyd_bench.attacks_registry.base import ImageAttack, clip_uint8
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


@ATTACKS.register("wanet")
@dataclass
class WaNet(ImageAttack):
    """Warp every poison with one fixed smooth field (k = 4, s = 0.5); rate 0.08, target 0."""

    poison_rate: float = 0.08
    k: int = 4
    s: float = 0.5
    per_image: bool = False
    _grid: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _rng: np.random.Generator | None = field(default=None, init=False, repr=False, compare=False)

    def setup(self, seed: int, ctx=None) -> None:
        self._rng = self.rng(seed)
        self._grid = warp_field(self._rng, self.k, self.s)

    def apply(self, images: np.ndarray) -> np.ndarray:
        if self._grid is None or self._rng is None:
            raise RuntimeError("WaNet.setup(seed) must run before apply()")
        x = torch.as_tensor(images).permute(0, 3, 1, 2).double() / 255.0
        out = []
        for start in range(0, len(x), 1024):
            chunk = x[start:start + 1024]
            grid = (torch.cat([warp_field(self._rng, self.k, self.s) for _ in range(len(chunk))])
                    if self.per_image else self._grid.expand(len(chunk), -1, -1, -1))
            out.append(F.grid_sample(chunk, grid.double(), mode="bilinear", align_corners=True))
        warped = torch.cat(out).permute(0, 2, 3, 1).numpy() if out else x.permute(0, 2, 3, 1).numpy()
        return clip_uint8(warped * 255.0)
