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


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device`` without making the host wait for the device: a CUDA copy goes through
    pinned memory, asynchronously (PyTorch's pinned-memory cache keeps the buffer until it is done)."""
    device = torch.device(device)
    if device.type != "cuda" or t.device == device:
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def augment(x: torch.Tensor, generator: torch.Generator, crop: bool = True) -> torch.Tensor:
    """RandomCrop(32, padding=4) (unless ``crop=False``) + RandomHorizontalFlip on a [0, 1] NCHW batch.

    The random draws come from ``generator`` (a CPU one, in the same order on every device), and the
    crop and flip run where ``x`` is: a batch on the GPU is augmented there."""
    n, _, h, w = x.shape
    if crop:
        dy = to_device(torch.randint(0, 9, (n,), generator=generator), x.device)
        dx = to_device(torch.randint(0, 9, (n,), generator=generator), x.device)
        out = _crop(F.pad(x, (4, 4, 4, 4)), dy, dx, h, w)
    else:
        out = x.clone()
    flip = to_device(torch.rand(n, generator=generator) < 0.5, x.device)
    out[flip] = out[flip].flip(3)
    return out


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, c, hp, wp = padded.shape
    row_idx = dy.view(n, 1) + torch.arange(h, device=padded.device).view(1, h)  # n×h
    col_idx = dx.view(n, 1) + torch.arange(w, device=padded.device).view(1, w)  # n×w
    out = padded.gather(2, row_idx.view(n, 1, h, 1).expand(n, c, h, wp))
    return out.gather(3, col_idx.view(n, 1, 1, w).expand(n, c, h, w))


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``; shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


class DeviceImages:
    """A uint8 NHWC image set uploaded to the device once, served as normalised channels-last batches.

    :meth:`batches` draws exactly what ``batches(n, batch_size, generator)`` followed by
    :func:`augment` on each batch draws, from the same CPU generator in the same order, so the
    batches are the same on every device; only the work moves to where the model is.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.images = torch.as_tensor(images).to(self.device)
        self.labels = torch.as_tensor(labels, dtype=torch.long).to(self.device)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator,
                augmentation: str = "crop_flip") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled (inputs, labels) batches; ``augmentation``: crop_flip, flip or none."""
        order = to_device(torch.randperm(len(self), generator=generator), self.device)
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            x = to_unit(self.images[idx])
            if augmentation != "none":
                x = augment(x, generator, crop=augmentation == "crop_flip")
            yield normalize(x).contiguous(memory_format=torch.channels_last), self.labels[idx]
