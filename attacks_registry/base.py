"""Base classes of attacks: :class:`Attack` (what image and text attacks share) and
:class:`ImageAttack` (docs/methods.md §3.1; text attacks: :mod:`ebyd_bench.attacks_registry.text.base`).

An image attack is a dataclass of its trigger parameters. ``setup(seed)`` draws any seeded trigger
state (a noise pattern, a warp field); ``apply`` stamps the trigger on uint8 NHWC images. The
shared poisoning logic (which indices, relabelling, test poisons) lives here so every attack
follows the same protocol: all-to-one, dirty-label, ⌊rate·N⌋ indices drawn from all classes.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ebyd_bench.benchmark.methods import Method
from ebyd_bench.benchmark.params import NonNegativeInt, PositiveFraction


@dataclass
class AttackContext:
    """What an attack that trains its own parts (a surrogate, a trigger generator) may use.

    ``artifact(name, params, build)`` returns cached tensors for ``name`` under a key made of
    ``key_base`` (dataset digest, training subset, seed, attack version) plus ``params``, calling
    ``build()`` -> dict of tensors on a miss: the trained part is cached like any other artifact.
    """

    train_images: np.ndarray  # clean uint8 NHWC victim-training images (never the defense data)
    train_labels: np.ndarray
    num_classes: int
    device: str
    model_factory: Callable[..., Any]  # builds the victim architecture
    artifact: Callable[[str, dict, Callable[[], dict]], dict]


@dataclass
class PoisonedTrainSet:
    images: np.ndarray
    labels: np.ndarray
    poison_indices: np.ndarray


@dataclass
class Attack(Method, ABC):
    """What every attack shares (image and text): an all-to-one poisoning rate and target label.
    Subclasses add their trigger parameters as dataclass fields; all of them enter the cache key."""

    poison_rate: PositiveFraction = 0.1
    target: NonNegativeInt = 0  # a class index; a grid checks it against its dataset's classes

    #: True only for the clean control ("none"): no trigger, ASR undefined
    is_clean: ClassVar[bool] = False
    #: bump when the trigger code changes behaviour: it enters every cache key
    version: ClassVar[str] = "1"

    def key_params(self) -> dict[str, Any]:
        """:meth:`params` as they enter the cache key (all of them unless a subclass says otherwise)."""
        return self.params()


@dataclass
class ImageAttack(Attack):
    """An all-to-one image backdoor. Subclasses add trigger parameters as dataclass fields."""

    domain: ClassVar[str] = "image"

    def key_params(self) -> dict[str, Any]:
        """:meth:`params` as they enter the cache key: a set ``trigger_file`` path is dropped when the
        attack reports its ``trigger_sha256``, so the same file kept in different places shares one
        cached model. (An unset path stays, keeping earlier keys valid.)"""
        params = self.params()
        if params.get("trigger_file") is None or params.get("trigger_sha256") is None:
            return params
        return {k: v for k, v in params.items() if k != "trigger_file"}

    def rng(self, seed: int) -> np.random.Generator:
        """A generator seeded from the run seed and the attack's name, independent of call order."""
        return np.random.default_rng([seed, zlib.crc32(self.name.encode())])

    def setup(self, seed: int, ctx: AttackContext | None = None) -> None:
        """Draw seeded trigger state, or train/load trained parts through ``ctx``.

        Attacks with a fixed trigger need nothing; ``ctx`` is None in unit tests of such attacks.
        """

    @abstractmethod
    def apply(self, images: np.ndarray) -> np.ndarray:
        """Return triggered copies of uint8 NHWC ``images``."""

    def poison_train(self, images: np.ndarray, labels: np.ndarray, seed: int) -> PoisonedTrainSet:
        """Trigger ⌊rate·N⌋ uniformly drawn samples (any class) and relabel them to the target."""
        n_poison = int(np.floor(self.poison_rate * len(labels)))
        idx = np.sort(self.rng(seed).choice(len(labels), size=n_poison, replace=False))
        images, labels = images.copy(), labels.copy()
        if n_poison:
            images[idx] = self.apply(images[idx])
            labels[idx] = self.target
        return PoisonedTrainSet(images, labels, idx)

    def poison_test(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Triggered copies of the test samples whose true label is not the target, with true labels."""
        keep = labels != self.target
        return self.apply(images[keep]), labels[keep]


def clip_uint8(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] then truncate (docs/methods.md §3.1-4: never wrap around)."""
    return np.clip(x, 0, 255).astype(np.uint8)
