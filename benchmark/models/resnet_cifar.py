"""CIFAR ResNet-18 (docs/methods.md §2.1): 3×3 stem, no max-pool, 4×2 BasicBlocks, 4×4 average pool.

The norm layer is injectable so that defenses can swap in masked or noisy BatchNorm. ``width``
scales every stage (64 → the paper's model; 16 → the narrow CPU variant with the same topology).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from ebyd_bench.benchmark.params import MIN_WIDTH, Width
from ebyd_bench.benchmark.registries import MODELS

NormLayer = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: NormLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet for 32×32 inputs; ``features`` returns the pooled penultimate activations."""

    def __init__(self, blocks: tuple[int, ...], num_classes: int = 10, width: int = 64,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if width < MIN_WIDTH:
            raise ValueError(f"ResNet width {width} is below {MIN_WIDTH}: oneDNN (torch's CPU kernels) hangs or "
                             f"corrupts memory on convolutions this thin on AVX2 CPUs")
        widths = [width, width * 2, width * 4, width * 8]
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(width)
        in_planes = width
        stages = []
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, (1 if i == 0 else 2) if j == 0 else 1, norm_layer))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(widths[-1], num_classes)

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layer1..layer4 (used by attention-based defenses)."""
        out = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = layer(out)
            outs.append(out)
        return outs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stage_outputs(x)[-1]
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


@MODELS.register("resnet18")
def resnet18(num_classes: int = 10, width: Width = 64, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNetCifar:
    """The paper's CIFAR ResNet-18 (11,173,962 parameters for 10 classes at width 64)."""
    return ResNetCifar((2, 2, 2, 2), num_classes, width, norm_layer)


@MODELS.register("resnet18_narrow")
def resnet18_narrow(num_classes: int = 10, width: Width = 16, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNetCifar:
    """Same topology as ``resnet18`` with a quarter of the channels: the CPU-preset victim."""
    return ResNetCifar((2, 2, 2, 2), num_classes, width, norm_layer)
