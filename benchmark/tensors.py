"""Image tensors: uint8 NHWC arrays → normalised float NCHW batches, and on-the-fly augmentation.

Triggers act on uint8 pixels before normalisation (docs/methods.md §1.1-4); models see normalised inputs.
Augmentation (random crop with 4-pixel zero padding and horizontal flip) runs on whole batches in
torch, which is several times faster on CPU than per-image PIL transforms.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC → float NCHW in [0, 1]."""
    t = torch.as_tensor(images)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """Normalise a [0, 1] NCHW batch with the PT statistics (docs/methods.md §1.1-4)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def augment(x: torch.Tensor, generator: torch.Generator, crop: bool = True) -> torch.Tensor:
    """RandomCrop(32, padding=4) (unless ``crop=False``) + RandomHorizontalFlip on a [0, 1] NCHW batch."""
    n, _, h, w = x.shape
    if crop:
        dy = torch.randint(0, 9, (n,), generator=generator)
        dx = torch.randint(0, 9, (n,), generator=generator)
        out = _crop(F.pad(x, (4, 4, 4, 4)), dy, dx, h, w)
    else:
        out = x.clone()
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, c, hp, wp = padded.shape
    row_idx = dy.view(n, 1) + torch.arange(h).view(1, h)  # n×h
    col_idx = dx.view(n, 1) + torch.arange(w).view(1, w)  # n×w
    out = padded.gather(2, row_idx.view(n, 1, h, 1).expand(n, c, h, wp))
    return out.gather(3, col_idx.view(n, 1, 1, w).expand(n, c, h, w))


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``; shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
