"""Adv: PGD noise from a clean surrogate plus the BadNets grid (docs/methods.md §3.3-6, Table VIII "Grid + PGD").

Training poisons: an untargeted L∞ PGD perturbation against the sample's true label on a clean
surrogate of the victim architecture (ε = 16/255, 10 steps of 2/255, random start; step count and
size are *unverified*), then the BadNets grid (rows/cols 29–31). Test poisons get the grid only.

Choice made (docs/methods.md §9 row 22): the perturbation is really applied. In MTBA/PT the noise is
only added when ``mode == 'Train'`` while callers pass ``'train'``, so Adv silently equals BadNets.

The surrogate is trained once per seed on the clean victim-training data through
``AttackContext.artifact`` (cached like any artifact). Its recipe is a set of attack parameters:
the paper recipe (200 epochs) is far too slow for the CPU presets, so the default is 10 epochs of
SGD 0.1 with a one-cycle schedule (≈ the victims' quick recipe; ≈ 91% CA for a full ResNet-18 on a
GPU). ``surrogate_schedule="multistep", surrogate_epochs=200`` gives the paper recipe.

Labels: dirty-label at the Table VIII rate 0.08 (paper App. A). ``label_mode="clean"`` follows
Turner et al.: it poisons ``clean_fraction`` (0.8) of the target class, keeps the labels and
ignores ``poison_rate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.attacks_registry.base import AttackContext, ImageAttack, PoisonedTrainSet
from ebyd_bench.attacks_registry.image.badnets import GRID
from ebyd_bench.attacks_registry.image.common import poison_indices
from ebyd_bench.benchmark.params import Count, LabelMode, PositiveFloat, PositiveFraction, Probability
from ebyd_bench.benchmark.registries import ATTACKS
from ebyd_bench.benchmark.tensors import normalize, to_unit
from ebyd_bench.benchmark.training import TrainRecipe, train_classifier


def stamp_grid(images: np.ndarray) -> np.ndarray:
    """The BadNets 3×3 grid at rows/cols 29–31 (all channels)."""
    out = images.copy()
    out[:, 29:32, 29:32, :] = GRID[None, :, :, None]
    return out


def pgd_untargeted(model: nn.Module, images: np.ndarray, labels: np.ndarray, eps: float, step: float,
                   steps: int, generator: torch.Generator, device: str = "cpu", random_start: bool = True,
                   batch_size: int = 256) -> np.ndarray:
    """L∞ PGD that raises the CE of the true labels; ``eps``/``step`` in pixel units (/255), uint8 out."""
    model.eval()
    eps_u, step_u = eps / 255.0, step / 255.0
    out = np.empty_like(images)
    for start in range(0, len(images), batch_size):
        x = to_unit(images[start:start + batch_size]).to(device)
        y = torch.as_tensor(labels[start:start + batch_size], dtype=torch.long, device=device)
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps_u if random_start else torch.zeros_like(x)
        xa = (x + noise.to(device)).clamp(0, 1)
        for _ in range(steps):
            xa.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(normalize(xa)), y), xa)
            xa = xa.detach() + step_u * grad.sign()
            xa = torch.min(torch.max(xa, x - eps_u), x + eps_u).clamp(0, 1)
        out[start:start + batch_size] = _to_uint8(xa, images[start:start + batch_size], eps)
    return out


def _to_uint8(xa: torch.Tensor, original: np.ndarray, eps: float) -> np.ndarray:
    """Truncate to uint8 (docs/methods.md §3.1-4), guarding float error so the ε-ball is kept exactly."""
    pix = np.floor(xa.permute(0, 2, 3, 1).cpu().double().numpy() * 255.0 + 1e-4)
    orig = original.astype(np.float64)
    return np.clip(np.clip(pix, orig - np.floor(eps), orig + np.floor(eps)), 0, 255).astype(np.uint8)


@ATTACKS.register("adv")
@dataclass
class Adv(ImageAttack):
    """PGD noise (clean surrogate) + BadNets grid on training poisons, grid at test; rate 0.08, target 0."""

    poison_rate: PositiveFraction = 0.08
    pgd_eps: PositiveFloat = 16.0  # pixel units (/255)
    pgd_step: PositiveFloat = 2.0
    pgd_steps: Count = 10
    random_start: bool = True
    label_mode: LabelMode = "dirty"
    clean_fraction: Probability = 0.8
    surrogate_epochs: Count = 10
    surrogate_lr: PositiveFloat = 0.1
    surrogate_schedule: Literal["multistep", "onecycle", "cosine"] = "onecycle"
    surrogate_batch_size: Count = 128
    needs: ClassVar[str] = "training"
    _surrogate: nn.Module | None = field(default=None, init=False, repr=False, compare=False)
    _device: str = field(default="cpu", init=False, repr=False, compare=False)

    def surrogate_recipe(self) -> TrainRecipe:
        return TrainRecipe(name="adv-surrogate", epochs=self.surrogate_epochs, lr=self.surrogate_lr,
                           schedule=self.surrogate_schedule, batch_size=self.surrogate_batch_size)

    def setup(self, seed: int, ctx: AttackContext | None = None) -> None:
        if ctx is None:
            raise ValueError("attack 'adv' trains a clean surrogate: setup(seed, ctx) needs an AttackContext")
        recipe = self.surrogate_recipe()
        surrogate_seed = int(np.random.default_rng([seed, 0xAD]).integers(2**31))

        def build() -> dict[str, torch.Tensor]:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(surrogate_seed)
                model = ctx.model_factory()
                train_classifier(model, ctx.train_images, ctx.train_labels, recipe, surrogate_seed, ctx.device,
                                 desc="adv surrogate")
            return {k: v.detach().cpu() for k, v in model.state_dict().items()}

        params = {"recipe": asdict(recipe), "seed": surrogate_seed}
        state = ctx.artifact("adv_surrogate", params, build)
        with torch.random.fork_rng(devices=[]):  # building a model must not move the global RNG
            model = ctx.model_factory()
        model.load_state_dict(state)
        self._surrogate, self._device = model.to(ctx.device).eval(), ctx.device

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Test-time trigger: the grid only."""
        return stamp_grid(images)

    def train_trigger(self, images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
        """Training-poison trigger: PGD against ``labels`` on the surrogate, then the grid."""
        if self._surrogate is None:
            raise RuntimeError("Adv.setup(seed, ctx) must run before poisoning training data")
        gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, 0xAD, 1]).integers(2**62)))
        noisy = pgd_untargeted(self._surrogate, images, labels, self.pgd_eps, self.pgd_step, self.pgd_steps,
                               gen, self._device, self.random_start)
        return stamp_grid(noisy)

    def poison_train(self, images: np.ndarray, labels: np.ndarray, seed: int) -> PoisonedTrainSet:
        idx = poison_indices(labels, self.poison_rate, self.target, self.label_mode, self.clean_fraction,
                             self.rng(seed))
        images, labels = images.copy(), labels.copy()
        if len(idx):
            images[idx] = self.train_trigger(images[idx], labels[idx], seed)
            labels[idx] = self.target
        return PoisonedTrainSet(images, labels, idx)
