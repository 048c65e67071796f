"""The object API of exposures and defenses.

A method is a dataclass of its hyper-parameters with one entry point. It sees only what the
threat model allows (docs/methods.md §1.2): the suspect model, the defense data ``D_d`` and a
:class:`MethodContext`. It never sees test data or the trigger. The harness evaluates whatever
model a method returns. ``ctx.monitor(step, model)`` lets the harness record test metrics along
an exposure trajectory (for BEM) without handing them to the method: it returns nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np
import torch
from torch import nn

from ebyd_bench.benchmark.metrics import accuracy, prediction_shares
from ebyd_bench.benchmark.params import check_ranges
from ebyd_bench.benchmark.training import predict

DefenseCategory = Literal["none", "removal", "input_filtering", "model_inspection"]


@dataclass
class DefenseData:
    """The defender's clean data ``D_d``: uint8 NHWC images with their labels."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int]) -> "DefenseData":
        idx = np.asarray(idx, dtype=np.int64)
        return DefenseData(self.images[idx], self.labels[idx], self.num_classes)


@dataclass
class MethodContext:
    """Everything a method may use besides the model."""

    data: DefenseData
    seed: int
    device: str = "cpu"
    #: builds a fresh model of the victim's architecture, optionally with another norm layer
    model_factory: Callable[..., nn.Module] | None = None
    #: harness hook: record test metrics of ``model`` at trajectory step ``step`` (returns None)
    monitor: Callable[[int, nn.Module], None] = field(default=lambda step, model: None)

    def generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)

    def clean_accuracy(self, model: nn.Module) -> float:
        """Eval-mode accuracy on un-augmented ``D_d`` (the only accuracy a defense may read)."""
        return accuracy(predict(model, self.data.images, self.device), self.data.labels)


@dataclass
class Method:
    """Shared helpers: every init field is a hyper-parameter that enters the cache key."""

    version: ClassVar[str] = "1"

    def __post_init__(self) -> None:
        check_ranges(self)  # the same range checks as a grid's, for methods built in Python

    @property
    def name(self) -> str:
        return type(self).registry_name  # type: ignore[attr-defined]

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


@dataclass
class ExposureResult:
    """An exposed model θ_b, the backdoor label read off it, and the trajectory."""

    model: nn.Module
    label: int
    label_share: float
    shares: list[float]
    trace: list[dict[str, Any]]
    stop_reason: str


@dataclass
class Exposure(Method, ABC):
    @abstractmethod
    def expose(self, model: nn.Module, ctx: MethodContext) -> ExposureResult:
        """Return an exposed copy of ``model``; ``model`` itself is left unchanged."""


@dataclass
class DefenseResult:
    """What a defense hands back to the harness, by category (TrojanZoo-style taxonomy).

    * removal: ``model``, the repaired model (the harness measures its CA and ASR);
    * model inspection: ``fields`` (e.g. flagged, predicted label, anomaly index) and ``images``
      (e.g. a recovered trigger mask and pattern, HWC float in [0, 1], saved next to the results).
      Two ``fields`` names are standard, read by the grid statistics for any defense (model- and
      label-level detection AUROC): ``model_score``, one float per model, higher = the model is more
      likely backdoored (NC: its anomaly index; on an exposed model, −L1 of the exposed label's
      mask); ``label_scores``, a list with one suspicion score per class, higher = more likely the
      backdoor's target (NC: the signed (med − l_t)/MAD). Report them when the defense has them;
      any other field is the defense's own;
    * input filtering: ``input_scorer``, a function from uint8 NHWC images to one suspicion
      score per image (higher = more likely triggered), each image scored independently. The
      harness scores clean and triggered test inputs with it and computes the AUROC. With
      ``input_threshold`` (the filter's own decision: flag scores above it, fixed from ``D_d``) it
      also reports FRR and FAR.

    ``alternatives`` (optional, any removal method that picks one model out of a family, e.g. one
    pruned model per threshold): (label, build) pairs. After the method has returned, the harness
    measures each one's test CA and ASR and stores them as ``diagnostic_sweep`` — analysis only
    (docs/methods.md §7.1-6), so nothing the method chose can depend on them.
    """

    model: nn.Module | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    input_scorer: Callable[[np.ndarray], np.ndarray] | None = None
    input_threshold: float | None = None
    alternatives: list[tuple[dict[str, Any], Callable[[], nn.Module]]] = field(default_factory=list)


@dataclass
class Defense(Method, ABC):
    category: ClassVar[DefenseCategory] = "removal"
    #: True when the method uses the exposed model θ_b if the grid provides one
    uses_exposure: ClassVar[bool] = False

    @abstractmethod
    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        """Defend ``model`` (θ) given the optional exposure of it; never modifies ``model``."""


def read_off_label(model: nn.Module, ctx: MethodContext) -> tuple[int, float, list[float]]:
    """Backdoor label = the class most predicted on un-augmented ``D_d`` (ties → smallest index)."""
    shares = prediction_shares(predict(model, ctx.data.images, ctx.device), ctx.data.num_classes)
    label = int(np.argmax(shares))
    return label, float(shares[label]), [float(s) for s in shares]
