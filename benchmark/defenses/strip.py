"""STRIP (Gao et al. 2019) on θ, or on an exposed θ_b ("X+STRIP"); paper Eq. 8, docs/methods.md §6.2.

An input filter: for each input x independently, draw N (100) overlay images x_n from ``D_d``
without replacement (x itself excluded when x ∈ ``D_d``), superimpose clip(x + x_n, 0, 1) in [0, 1]
pixel space, normalise, and sum the softmax entropies in bits over the N copies:
H(x) = −Σ_n Σ_c p_c log₂ p_c. Score = −H (low entropy = suspicious; orientation fixed in advance,
§9 row 31). The overlays of an input are drawn from a generator seeded by the run seed and a hash
of the input's pixels, so a score never depends on which other inputs share its batch. X+STRIP
scores with θ_b; overlays are unchanged. The model is never modified (``model=None``).

Optional decision (STRIP-orig; docs/methods.md §6.2-7), off by default: with ``decision_frr`` (e.g. 0.01)
every ``D_d`` input is scored the same way (its overlays from the rest of ``D_d``), a normal
distribution is fitted to those entropies, and its ``decision_frr`` quantile is the threshold: an
input is flagged when H < threshold. The harness then also reports ``strip_frr`` (clean test inputs
flagged) and ``strip_far`` (triggered ones let through).
Cost: N forward passes per scored input (the harness scores 2 × ``detection_eval_size`` inputs, the
decision |D_d| more).
"""

from __future__ import annotations

import copy
import hashlib
import math
import statistics
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, OpenFraction
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.benchmark.tensors import normalize, to_unit


@DEFENSES.register("strip")
@dataclass
class Strip(Defense):
    """Score inputs by −(summed entropy over N superimposed D_d overlays); low entropy = triggered."""

    category = "input_filtering"
    uses_exposure = True
    #: images per forward pass (speed only, not results): small batches stay in the CPU caches
    cpu_forward_batch: ClassVar[int] = 200
    forward_batch: ClassVar[int] = 4000

    n_overlays: Count = 100
    decision_frr: OpenFraction | None = None  # e.g. 0.01: flag H below this quantile of a normal fit to D_d's H

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decision_frr is not None and not 0.0 < self.decision_frr < 1.0:
            raise ValueError(f"strip: decision_frr must be in (0, 1), got {self.decision_frr}")

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        if not 0 < self.n_overlays < len(ctx.data):
            raise ValueError(f"strip: n_overlays must be in [1, {len(ctx.data) - 1}] for |D_d| = {len(ctx.data)}")
        net = copy.deepcopy(exposed.model if exposed is not None else model).to(ctx.device).eval()
        batch = self.cpu_forward_batch if str(ctx.device) == "cpu" else self.forward_batch
        scorer = _Scorer(net, ctx, self.n_overlays, batch)
        fields = {"strip_model": "theta_b" if exposed is not None else "theta", "strip_overlays": self.n_overlays,
                  "strip_forward_passes_per_input": self.n_overlays}
        threshold = None
        if self.decision_frr is not None:
            entropy = self.decision_entropy(scorer(ctx.data.images))
            fields.update(strip_decision_frr=self.decision_frr, strip_entropy_threshold=round(entropy, 6))
            threshold = -entropy  # scores are −H: flagged when −H > −threshold
        return DefenseResult(None, fields, input_scorer=scorer, input_threshold=threshold)

    def decision_entropy(self, dd_scores: np.ndarray) -> float:
        """The ``decision_frr`` quantile of a normal fitted (maximum likelihood) to the D_d entropies."""
        entropy = -np.asarray(dd_scores, float)
        if entropy.std() == 0:  # a degenerate fit: flag only what is below every D_d input
            return float(entropy.mean())
        return float(statistics.NormalDist(entropy.mean(), entropy.std()).inv_cdf(self.decision_frr))


class _Scorer:
    """images (uint8 NHWC) → −H_sum per image."""

    def __init__(self, net: nn.Module, ctx: MethodContext, n: int, forward_batch: int) -> None:
        self.net, self.n, self.device, self.seed = net, n, ctx.device, ctx.seed
        self.pool = to_unit(ctx.data.images).to(ctx.device)
        self.images = ctx.data.images
        self.index = {_digest(img): i for i, img in enumerate(ctx.data.images)}
        self.chunk = max(1, forward_batch // n)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images)
        return np.concatenate([self._score(images[i:i + self.chunk]) for i in range(0, len(images), self.chunk)]
                              or [np.empty(0)])

    @torch.no_grad()
    def _score(self, block: np.ndarray) -> np.ndarray:
        idx = torch.stack([self.overlays(img) for img in block]).to(self.device)  # B × N
        x = to_unit(block).to(self.device)
        mixed = (x[:, None] + self.pool[idx]).clamp_(0, 1).flatten(0, 1)
        logp = F.log_softmax(self.net(normalize(mixed)).float(), dim=1)
        entropy = -(logp.exp() * logp).sum(1) / math.log(2)
        return (-entropy.view(len(block), self.n).sum(1)).double().cpu().numpy()

    def overlays(self, img: np.ndarray) -> torch.Tensor:
        """N distinct D_d indices for ``img``, excluding ``img`` itself; seeded by (run seed, pixels)."""
        key = _digest(img)
        own = self.index.get(key)
        if own is not None and not np.array_equal(self.images[own], img):
            own = None  # hash collision: not the same image
        gen = torch.Generator().manual_seed((int.from_bytes(key[:8], "little") ^ self.seed) & (2**63 - 1))
        size = len(self.pool) - (own is not None)
        picks = torch.randperm(size, generator=gen)[:self.n]
        return picks + (picks >= own).long() if own is not None else picks


def _digest(img: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=16).digest()
