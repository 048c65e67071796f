"""NC — Neural Cleanse (Wang et al. 2019) on θ, or on an exposed θ_b ("X+NC"); docs/methods.md §6.1.

Trigger reverse-engineering for a label t: a mask m ∈ [0,1]^{H×W} and a pattern p ∈ [0,1]^{3×H×W},
both parametrised as tanh(·)/(2 − ε) + 0.5 (random init, seeded per label), mixed in pixel space
x' = (1 − m)·x + m·p and normalised afterwards, minimising CE(f(x'), t) + λ‖m‖₁ over un-augmented
``D_d`` in batches of 64 with Adam (lr 0.1, β (0.5, 0.9)), model in eval mode. λ follows the NC-orig
schedule, evaluated once per epoch on the epoch's mean attack accuracy: ×2 after ``patience`` (5)
epochs at ≥ 0.99, ÷2^1.5 after 5 epochs below. Kept: the mask/pattern at the end of the epoch with
the lowest mean ‖m‖₁ among epochs with mean attack accuracy ≥ 0.99 (the final one if none reached
it; ``nc_success`` records which). Early stop (NC-orig rule, patience 10 epochs, the project's
[D]): once λ has moved both up and down, stop after ``early_stop_patience`` epochs without a new
best L1. At most ``epochs`` (50) epochs per label.

Decision without an exposure (all K labels on θ): the anomaly index with the numpy median and
MAD × 1.4826 (:func:`anomaly_index`); backdoored iff AI ≥ 2; flagged labels have AI_t > 2, the
first (lowest L1) is ``nc_label``. With an exposure (X+NC, paper Eq. 10): one run, for the exposed
label on θ_b; the model-level decision uses the exposure statistic (VAR of the ``D_d`` prediction
shares > 0.01, §6.4) and the mask L1 is recorded (its negative is the model-level DR score, §6.3).
The standard detection fields (:class:`DefenseResult`): ``model_score`` = the anomaly index without
an exposure, −L1 of the exposed label's mask with one; ``label_scores`` = ``nc_label_scores`` (plain NC).
The recovered trigger (mask, pattern and m·p) is returned as images, the paper's Fig. 7.
Cost: (K or 1) × ≤ ``epochs`` × ⌈|D_d|/64⌉ forward+backward passes of 64 images, the K labels run in
lockstep with their batches stacked into one pass per step (each label's arithmetic unchanged).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ebyd_bench.benchmark.defenses.common import defense_tensors
from ebyd_bench.benchmark.methods import Defense, DefenseResult, ExposureResult, MethodContext
from ebyd_bench.benchmark.params import Count, GrowthFactor, NonNegativeFloat, PositiveFloat, PositiveFraction
from ebyd_bench.benchmark.registries import DEFENSES
from ebyd_bench.benchmark.tensors import batches, normalize, to_device

TANH_EPS = 1e-7  # NC-orig's K.epsilon() in tanh(·)/(2 − ε) + 0.5


@dataclass
class Trigger:
    """One label's reverse-engineered trigger."""

    label: int
    mask: torch.Tensor  # H×W in [0, 1]
    pattern: torch.Tensor  # 3×H×W in [0, 1]
    attack_acc: float  # mean attack accuracy of the epoch the trigger was kept at
    success: bool  # an epoch reached the attack-success threshold
    epochs: int

    @property
    def l1(self) -> float:
        return float(self.mask.abs().sum())

    def images(self) -> dict[str, np.ndarray]:
        """Mask (H×W), pattern and m·p (H×W×3) as float arrays in [0, 1]."""
        pattern = self.pattern.permute(1, 2, 0)
        return {"nc_mask": self.mask.numpy(), "nc_pattern": pattern.numpy(),
                "nc_trigger": (pattern * self.mask[..., None]).numpy()}


def anomaly_index(l1: list[float], threshold: float = 2.0) -> tuple[float, list[float], list[int]]:
    """NC's MAD outlier test (docs/methods.md §6.1.1 steps 2–5) on per-label mask norms.

    Returns (AI, per-label signed scores (med − l_t)/MAD, flagged labels sorted by l_t). The median
    follows numpy (mean of the two middle values for even K) and MAD = 1.4826 · median |l − med|.
    If MAD = 0: AI = +∞ when min l < med, else 0; label scores are ±∞ by the sign of med − l_t (0 on
    the median). Flagged: l_t < med and score > ``threshold``.
    """
    values = np.asarray(l1, dtype=float)
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    diff = med - values
    if mad > 0:
        scores = diff / mad
    else:
        scores = np.where(diff > 0, np.inf, np.where(diff < 0, -np.inf, 0.0))
    ai = float(scores.max()) if len(values) else 0.0
    flagged = sorted((t for t in range(len(values)) if diff[t] > 0 and scores[t] > threshold),
                     key=lambda t: (values[t], t))
    return ai, [float(s) for s in scores], flagged


@DEFENSES.register("nc")
@dataclass
class NeuralCleanse(Defense):
    """Reverse-engineer a minimal trigger per label; flag a label whose mask is an L1 outlier."""

    category = "model_inspection"
    uses_exposure = True

    epochs: Count = 50
    batch_size: Count = 64
    lr: PositiveFloat = 0.1
    init_cost: PositiveFloat = 1e-3
    attack_succ_threshold: PositiveFraction = 0.99
    patience: Count = 5
    cost_multiplier: GrowthFactor = 2.0
    early_stop: bool = True
    early_stop_threshold: PositiveFraction = 1.0  # "no improvement" = best L1 ≥ this × the previous best
    early_stop_patience: Count = 10
    ai_threshold: PositiveFloat = 2.0
    var_threshold: NonNegativeFloat = 0.01  # exposure statistic of the X+NC model decision (docs/methods.md §6.4)

    def defend(self, model: nn.Module, exposed: ExposureResult | None, ctx: MethodContext) -> DefenseResult:
        start = time.perf_counter()
        if exposed is None:
            fields, shown = self._inspect_all(model, ctx)
        else:
            fields, shown = self._inspect_exposed(exposed, ctx)
        fields["nc_seconds"] = round(time.perf_counter() - start, 3)
        fields["nc_image_label"] = shown.label
        return DefenseResult(None, fields, shown.images())

    def _inspect_all(self, model: nn.Module, ctx: MethodContext) -> tuple[dict, Trigger]:
        net = _frozen(model, ctx.device)
        triggers = self.reverse_engineer_all(net, list(range(ctx.data.num_classes)), ctx)
        l1 = [tr.l1 for tr in triggers]
        ai, scores, flagged = anomaly_index(l1, self.ai_threshold)
        label = flagged[0] if flagged else None
        fields = {"nc_flagged": ai >= self.ai_threshold, "nc_label": label, "anomaly_index": ai,
                  "model_score": ai, "label_scores": scores,  # the standard detection fields (DefenseResult)
                  "nc_flagged_labels": flagged, "nc_label_scores": scores,
                  "nc_mask_l1": {str(t): v for t, v in enumerate(l1)},
                  "nc_label_l1": l1[label] if label is not None else None,
                  "nc_attack_acc": [round(tr.attack_acc, 4) for tr in triggers],
                  "nc_success": [tr.success for tr in triggers], "nc_epochs": [tr.epochs for tr in triggers]}
        return fields, triggers[label if label is not None else int(np.argmin(l1))]

    def _inspect_exposed(self, exposed: ExposureResult, ctx: MethodContext) -> tuple[dict, Trigger]:
        tr = self.reverse_engineer(_frozen(exposed.model, ctx.device), exposed.label, ctx)
        var = float(np.var(np.asarray(exposed.shares, dtype=float)))  # population variance
        fields = {"nc_flagged": var > self.var_threshold, "nc_label": exposed.label,
                  "nc_exposure_var": var, "nc_label_share": float(exposed.label_share),
                  "nc_mask_l1": {str(exposed.label): tr.l1}, "nc_label_l1": tr.l1,
                  "model_score": -tr.l1,  # a smaller trigger for the exposed label = more suspicious
                  "nc_attack_acc": round(tr.attack_acc, 4), "nc_success": tr.success, "nc_epochs": tr.epochs}
        return fields, tr

    def reverse_engineer(self, net: nn.Module, label: int, ctx: MethodContext) -> Trigger:
        """NC's optimisation for one label on a frozen eval-mode ``net`` (seeded by the label)."""
        return self.reverse_engineer_all(net, [label], ctx)[0]

    def reverse_engineer_all(self, net: nn.Module, labels: list[int], ctx: MethodContext) -> list[Trigger]:
        """NC's optimisation for several labels in lockstep: each step stacks one batch per label into a
        single forward and backward pass (one pass of K·64 images instead of K passes of 64, which is
        what keeps a GPU busy). Every label keeps its own seeded initialisation, batch order, Adam
        state, λ schedule and early stop, and its loss depends on its own mask and pattern only, so
        its trigger is the one it would get alone."""
        x_dev = defense_tensors(ctx)[0].to(ctx.device)  # D_d uploaded once, not per step
        runs = [_LabelRun(self, label, ctx, x_dev.shape[-2:]) for label in labels]
        for epoch in range(1, self.epochs + 1):
            active = [run for run in runs if not run.stopped]
            if not active:
                break
            orders = [list(batches(len(x_dev), self.batch_size, run.gen)) for run in active]
            for step in zip(*orders):
                loss = torch.zeros((), device=ctx.device)
                parts = [run.mixed(x_dev[to_device(idx, ctx.device)]) for run, idx in zip(active, step)]
                logits = net(normalize(torch.cat(parts))).split([len(idx) for idx in step])
                for run, chunk in zip(active, logits):
                    loss = loss + run.loss(chunk)
                for run in active:
                    run.opt.zero_grad(set_to_none=True)
                loss.backward()
                for run in active:
                    run.opt.step()
            for run in active:
                run.end_epoch(epoch)
        return [run.trigger() for run in runs]


class _LabelRun:
    """One label's reverse-engineering state: mask and pattern (tanh space), Adam, λ schedule, best."""

    def __init__(self, nc: NeuralCleanse, label: int, ctx: MethodContext, size: torch.Size) -> None:
        self.label, self.gen = label, ctx.generator(salt=100 + label)
        self.mask_raw = _to_tanh_space(torch.rand(*size, generator=self.gen, dtype=torch.float64)).to(ctx.device)
        self.pattern_raw = _to_tanh_space(torch.rand(3, *size, generator=self.gen, dtype=torch.float64)).to(ctx.device)
        self.mask_raw.requires_grad_(True)
        self.pattern_raw.requires_grad_(True)
        self.opt = torch.optim.Adam([self.mask_raw, self.pattern_raw], lr=nc.lr, betas=(0.5, 0.9))
        self.nc, self.schedule = nc, _CostSchedule(nc)
        self.accs: list[torch.Tensor] = []
        self.regs: list[torch.Tensor] = []
        self.best: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self.mask: torch.Tensor | None = None  # this step's m, set by mixed() and read by loss()
        self.acc, self.epochs, self.stopped = 0.0, 0, False

    def mixed(self, x: torch.Tensor) -> torch.Tensor:
        """x' = (1 − m)·x + m·p in pixel space; keeps this step's m for :meth:`loss`."""
        self.mask = _from_tanh_space(self.mask_raw)
        return (1 - self.mask) * x + self.mask * _from_tanh_space(self.pattern_raw)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """CE towards the label + λ‖m‖₁ for this step's batch; keeps the step's accuracy and ‖m‖₁ on the device."""
        assert self.mask is not None, "mixed() builds the step's batch before loss()"
        target = torch.full((len(logits),), self.label, device=logits.device)
        reg = self.mask.abs().sum()
        self.accs.append((logits.argmax(1) == target).float().mean().detach())
        self.regs.append(reg.detach())
        return F.cross_entropy(logits, target) + self.schedule.cost * reg

    def end_epoch(self, epoch: int) -> None:
        """The epoch's one read from the device: keep the best trigger, advance λ, maybe stop."""
        self.acc, reg = _epoch_mean(self.accs), _epoch_mean(self.regs)
        self.accs, self.regs, self.epochs = [], [], epoch
        if self.acc >= self.nc.attack_succ_threshold and reg < self.schedule.reg_best:
            self.best = (_from_tanh_space(self.mask_raw).detach(), _from_tanh_space(self.pattern_raw).detach(), self.acc)
            self.schedule.reg_best = reg
        self.stopped = self.schedule.update(self.acc)

    def trigger(self) -> Trigger:
        mask, pattern, acc = self.best or (_from_tanh_space(self.mask_raw).detach(),
                                           _from_tanh_space(self.pattern_raw).detach(), self.acc)
        return Trigger(self.label, mask.cpu().clamp(0, 1), pattern.cpu().clamp(0, 1), acc,
                       self.schedule.reg_best < math.inf, self.epochs)


class _CostSchedule:
    """NC-orig's adaptive λ and early-stop bookkeeping, advanced once per epoch."""

    def __init__(self, nc: NeuralCleanse) -> None:
        self.nc = nc
        self.cost = nc.init_cost
        self.reg_best = math.inf
        self.up = self.down = self.set_count = self.stop_count = 0
        self.up_flag = self.down_flag = False
        self.stop_reg_best = math.inf

    def update(self, acc: float) -> bool:
        """Record one epoch's mean attack accuracy; return True to stop early."""
        nc, ok = self.nc, acc >= self.nc.attack_succ_threshold
        if nc.early_stop:
            if self.reg_best < math.inf:
                improved = self.reg_best < nc.early_stop_threshold * self.stop_reg_best
                self.stop_count = 0 if improved else self.stop_count + 1
            self.stop_reg_best = min(self.reg_best, self.stop_reg_best)
            if self.up_flag and self.down_flag and self.stop_count >= nc.early_stop_patience:
                return True
        if self.cost == 0 and ok:
            self.set_count += 1
            if self.set_count >= nc.patience:
                self.cost, self.up, self.down, self.up_flag, self.down_flag = nc.init_cost, 0, 0, False, False
        else:
            self.set_count = 0
        self.up, self.down = (self.up + 1, 0) if ok else (0, self.down + 1)
        if self.up >= nc.patience:
            self.up, self.cost, self.up_flag = 0, self.cost * nc.cost_multiplier, True
        elif self.down >= nc.patience:
            self.down, self.cost, self.down_flag = 0, self.cost / nc.cost_multiplier ** 1.5, True
        return False


def _frozen(model: nn.Module, device: str) -> nn.Module:
    net = copy.deepcopy(model).to(device).eval()
    return net.requires_grad_(False)


def _epoch_mean(values: list[torch.Tensor]) -> float:
    """The float64 mean of per-step scalars kept on the device, read back once."""
    return float(np.mean(torch.stack(values).cpu().double().numpy()))


def _to_tanh_space(v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_from_tanh_space`, computed in float64 so 0 and 1 stay finite."""
    return torch.atanh((v - 0.5) * (2 - TANH_EPS)).float()


def _from_tanh_space(raw: torch.Tensor) -> torch.Tensor:
    return torch.tanh(raw) / (2 - TANH_EPS) + 0.5
