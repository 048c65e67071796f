"""Run a grid: plan train → expose → defend+evaluate stages, execute them, write records.

:class:`GridRun` holds what the stages of one run share (data, splits, evaluation sets, cache,
result store). The planner (:meth:`GridRun.plan`) emits one stage per poisoned model, per
exposure of it and per grid cell, each keyed by a hash of everything that determines it; cells
already in ``OUT/results.jsonl`` are skipped and so are the stages only they needed.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ebyd_bench.attacks_registry.base import AttackContext, ImageAttack
from ebyd_bench.benchmark.cache import ArtifactCache, key_stable, stable_hash
from ebyd_bench.benchmark.grid.config import GridConfig, MethodSpec, build_method
from ebyd_bench.benchmark.grid.executor import Executor, LocalExecutor, Stage
from ebyd_bench.benchmark.methods import DefenseData, ExposureResult, MethodContext
from ebyd_bench.benchmark.metrics import backdoor_exposure_metric, cell_metrics, input_filter_metrics
from ebyd_bench.benchmark.provenance import provenance
from ebyd_bench.reports.statistics import grid_statistics
from ebyd_bench.benchmark.registries import ATTACKS, DATASETS, DEFENSES, EXPOSURES, MODELS
from ebyd_bench.benchmark.training import TrainRecipe, native_bf16, predict_logits, resolve_precision, train_classifier

log = logging.getLogger(__name__)

#: bump when training, splitting or poisoning code changes results: it enters every model key
HARNESS_VERSION = "1"


@dataclass
class RunOptions:
    out_dir: Path
    cache_dir: Path
    data_root: Path
    device: str = "cpu"
    #: (index, count): run only the poisoned models j with j % count == index (in the config's
    #: seeds × attacks order) and everything downstream of them, so that ``count`` processes (GPUs,
    #: machines, job-array tasks) sharing the cache and ``out_dir`` split one grid between them
    shard: tuple[int, int] = (0, 1)


@dataclass
class Artifacts:
    """A stage output: cached tensors and metadata (state dicts for models)."""

    key: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    cached: bool


class GridRun:
    def __init__(self, cfg: GridConfig, opts: RunOptions) -> None:
        from ebyd_bench.results import ResultStore

        self.cfg, self.opts = cfg, opts
        self.device = opts.device
        self.cache = ArtifactCache(opts.cache_dir)
        self.store = ResultStore(opts.out_dir)
        self.recipe = resolve_precision(cfg.train_recipe(), opts.device)
        loader = DATASETS.get(cfg.dataset.name)
        self.data = loader(opts.data_root, cache_dir=opts.cache_dir, download=cfg.dataset.download)
        self.provenance = provenance(self.device)
        n_test = len(self.data.test)
        size = min(cfg.dataset.test_subset or n_test, n_test)
        # The evaluated test subset is fixed (not seed-dependent) so seeds are compared on equal data.
        # It stays in random order: the exposure trace and the input-detection AUROCs use a prefix of
        # it, which is then a uniform sample rather than the first classes of a class-sorted folder.
        self.test_idx = np.random.default_rng(12345).permutation(n_test)[:size]
        self._memo: dict[Any, Any] = {}
        self.models_trained = 0
        warn_if_slow_precision(getattr(self.recipe, "precision", "fp32"), self.device)

    # ----------------------------------------------------------------- shared data
    def split(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(defense indices, victim-training indices) into the training split, drawn from the seed."""
        n = len(self.data.train)
        ds = self.cfg.dataset
        if ds.defense_size >= n:
            raise ValueError(f"defense_size {ds.defense_size} leaves no training data out of {n}")
        perm = np.random.default_rng([seed, 7]).permutation(n)
        rest = perm[ds.defense_size:]
        return np.sort(perm[:ds.defense_size]), np.sort(rest[:ds.train_subset] if ds.train_subset else rest)

    def defense_data(self, seed: int) -> DefenseData:
        idx = self.split(seed)[0]
        return DefenseData(self.data.train.images[idx], self.data.train.labels[idx], self.data.num_classes)

    def attack(self, spec: MethodSpec, seed: int) -> ImageAttack:
        key = ("attack", spec.identity, seed)
        if key not in self._memo:
            attack = build_method(ATTACKS, spec, "attack")
            attack.setup(seed, self.attack_context(attack, seed))
            self._memo[key] = attack
        return self._memo[key]

    def attack_context(self, attack: ImageAttack, seed: int) -> AttackContext:
        """Clean victim-training data plus a cache for the parts an attack trains (cached once)."""
        train_idx = self.split(seed)[1]
        ds = self.cfg.dataset
        base = {"dataset": self.data.digest, "train_subset": ds.train_subset, "defense_size": ds.defense_size,
                "seed": seed, "attack": attack.name, "version": attack.version,
                "model": {"name": self.cfg.model.name, "params": self.cfg.model.params}}

        return AttackContext(self.data.train.images[train_idx], self.data.train.labels[train_idx],
                             self.data.num_classes, self.device, self.new_model,
                             self.part_cache("attack_part", base))

    def part_cache(self, kind: str, base: dict[str, Any]):
        """``artifact(name, params, build)``: tensors an attack trains, cached under ``base`` + name + params."""

        def artifact(name: str, params: dict, build) -> dict[str, torch.Tensor]:
            key = stable_hash({"kind": kind, "base": base, "name": name, "params": params})
            with self.cache.lock("attack_parts", key):
                art = self.cache.load("attack_parts", key)
                if art is not None:
                    return art.tensors
                tensors = build()
                self.cache.save("attack_parts", key, tensors, {"base": base, "name": name, "params": params})
                return tensors

        return artifact

    def new_model(self, seed: int | None = None, **overrides: Any) -> nn.Module:
        if seed is not None:
            torch.manual_seed(seed)
        params = {**self.cfg.model.params, **overrides}
        model = MODELS.get(self.cfg.model.name)(num_classes=self.data.num_classes, **params)
        return model.to(self.device).to(memory_format=torch.channels_last)

    def load_model(self, tensors: dict[str, torch.Tensor]) -> nn.Module:
        model = self.new_model()
        model.load_state_dict(tensors)
        return model.eval()

    def method_context(self, seed: int, monitor=None) -> MethodContext:
        ctx = MethodContext(self.defense_data(seed), seed, self.device, model_factory=self.new_model)
        if monitor is not None:
            ctx.monitor = monitor
        return ctx

    # ----------------------------------------------------------------- evaluation (harness only)
    def _test_sets(self, attack: ImageAttack, limit: int | None = None) -> tuple:
        key = ("test", attack.name, stable_hash(attack.params()), limit)
        if key not in self._memo:
            idx = self.test_idx[:limit] if limit else self.test_idx
            x, y = self.data.test.images[idx], self.data.test.labels[idx]
            px, py = attack.poison_test(x, y)
            self._memo[key] = (x, y, px, py)
        return self._memo[key]

    def evaluate(self, model: nn.Module, attack: ImageAttack, limit: int | None = None) -> dict[str, float]:
        """CA on the clean test subset, CA_nt without the target class, ASR on triggered non-target images,
        and the prior-matched CA/ASR (:func:`ebyd_bench.benchmark.metrics.cell_metrics`)."""
        x, y, px, py = self._test_sets(attack, limit)
        triggered = None if attack.is_clean else predict_logits(model, px, self.device).numpy()
        return cell_metrics(predict_logits(model, x, self.device).numpy(), y, triggered, py, attack.target)

    def input_filter_scores(self, scorer, attack: ImageAttack) -> tuple[np.ndarray, np.ndarray]:
        """An input filter's scores of clean and of triggered non-target test inputs.

        Uses ``detection_eval_size`` of each, drawn from the evaluated test subset; which input is
        which is known here only, never by the defense.
        """
        x, _, px, _ = self._test_sets(attack)
        n = self.cfg.detection_eval_size
        return np.asarray(scorer(x[:n]), float), np.asarray(scorer(px[:n]), float)

    def diagnostic_sweep(self, alternatives: list, attack: Any) -> list[dict[str, Any]]:
        """Test CA/ASR of every alternative a method chose among, on the ``trace_eval_size`` prefix of
        the test subset; for analysis only (reference §7.1-6), measured after the method returned."""
        rows = []
        for label, build in alternatives:
            metrics = self.evaluate(build(), attack, self.cfg.trace_eval_size)
            rows.append({**label, **{f"test_{k}": v for k, v in metrics.items()}})
        return rows

    def _save_images(self, cell_key: str, images: dict[str, np.ndarray]) -> dict[str, str]:
        """Write a defense's images (HWC or HW floats in [0, 1]) as PNGs under OUT/artifacts/."""
        from PIL import Image

        from ebyd_bench.benchmark.io import atomic_write

        folder = self.opts.out_dir / "artifacts" / cell_key[:16]
        paths = {}
        for name, img in images.items():
            arr = (np.clip(np.asarray(img, float), 0, 1) * 255).round().astype(np.uint8)
            path = folder / f"{name}.png"
            atomic_write(path, lambda tmp, a=arr: Image.fromarray(a.squeeze()).save(tmp, format="PNG"))
            paths[name] = str(path.relative_to(self.opts.out_dir))
        return paths

    def _before_metrics(self, model_key: str, model: nn.Module, attack: ImageAttack) -> dict[str, float]:
        """Metrics of the undefended model, computed once per run (for deviations)."""
        key = ("before", model_key)
        if key not in self._memo:
            self._memo[key] = self.evaluate(model, attack)
        return self._memo[key]

    def setting_notes(self, attack: ImageAttack) -> list[str]:
        """Every way this cell's setting deviates from the paper's, to print next to its numbers."""
        notes = []
        model = self.cfg.model
        if model.name != "resnet18" or model.params.get("width", 64) != 64:
            notes.append(f"victim {model.name} {model.params or ''} is smaller than the paper's ResNet-18".replace("  ", " "))
        if asdict(self.recipe) != asdict(TrainRecipe()):
            notes.append(f"recipe '{self.recipe.name}' ({self.recipe.epochs} epochs, {self.recipe.schedule}) "
                         f"instead of the paper's 200 epochs")
        if self.cfg.dataset.defense_in_training:
            notes.append("D_d was also part of victim training (ablation; by default it is held out)")
        if self.recipe.precision != "fp32":
            notes.append(f"victims trained under {self.recipe.precision} autocast")
        return notes + self.subset_and_attack_notes(attack, "images")

    def subset_and_attack_notes(self, attack: Any, unit: str) -> list[str]:
        """Notes shared by every domain: training/test subsets and non-default attack parameters."""
        notes = []
        ds, n_train = self.cfg.dataset, len(self.data.train) - self.cfg.dataset.defense_size
        if ds.train_subset and ds.train_subset < n_train:
            notes.append(f"victims trained on {ds.train_subset} of {n_train} training {unit}")
        if len(self.test_idx) < len(self.data.test):
            notes.append(f"evaluated on {len(self.test_idx)} of {len(self.data.test)} test {unit}")
        defaults = type(attack)().params()
        changed = {k: v for k, v in attack.params().items() if defaults.get(k) != v}
        if changed:
            notes.append(f"{attack.name} parameters differ from the reference defaults: "
                         + ", ".join(f"{k}={v} (default {defaults[k]})" for k, v in changed.items()))
        return notes

    # ----------------------------------------------------------------- keys
    def model_key_payload(self, spec: MethodSpec, seed: int) -> dict[str, Any]:
        attack = build_method(ATTACKS, spec, "attack")
        ds = self.cfg.dataset
        return {
            "kind": "poisoned_model", "harness_version": HARNESS_VERSION,
            "dataset": key_stable({"name": self.data.name, "digest": self.data.digest,
                                   "train_subset": ds.train_subset, "defense_size": ds.defense_size,
                                   "defense_in_training": ds.defense_in_training}),
            "attack": {"name": spec.name, "version": attack.version, "params": attack.key_params()},
            "model": {"name": self.cfg.model.name, "params": self.cfg.model.params},
            "recipe": key_stable(asdict(self.recipe)), "seed": seed,
        }

    def exposure_key_payload(self, model_key: str, spec: MethodSpec, seed: int) -> dict[str, Any]:
        exposure = build_method(EXPOSURES, spec, "exposure")
        return {"kind": "exposure", "model": model_key, "seed": seed,
                "exposure": {"name": spec.name, "version": exposure.version, "params": key_stable(exposure.params())},
                "eval": {"test_idx": stable_hash(self.test_idx.tolist()), "trace": self.cfg.trace_eval_size}}

    def cell_key_payload(self, model_key: str, exposure_key: str | None, spec: MethodSpec) -> dict[str, Any]:
        defense = build_method(DEFENSES, spec, "defense")
        evaluation: dict[str, Any] = {"test_idx": stable_hash(self.test_idx.tolist())}
        if defense.category == "input_filtering":  # only input filters are scored on this many inputs
            evaluation["detection"] = self.cfg.detection_eval_size
        return {"kind": "cell", "model": model_key, "exposure": exposure_key,
                "defense": {"name": spec.name, "version": defense.version, "params": key_stable(defense.params())},
                "eval": evaluation}

    # ----------------------------------------------------------------- planning
    def plan(self, finished: set[str]) -> tuple[list[Stage], int]:
        """Stages for every unfinished cell of this run's shard (and the stages they need); also the
        count skipped.

        A defense that ignores the exposure (``uses_exposure = False``) gets one cell per model,
        whatever the exposures listed: its result cannot depend on them.
        """
        stages: dict[str, Stage] = {}
        skipped: set[str] = set()
        no_exposure = MethodSpec(name="none")
        shard, shards = self.opts.shard
        for seed, atk in self.cfg.models()[shard::shards]:
            mkey = stable_hash(self.model_key_payload(atk, seed))
            train = Stage(mkey, "train", f"train {atk.name} seed={seed}", (),
                          functools.partial(self._run_train, atk, seed, mkey))
            for exp in self.cfg.exposures or [no_exposure]:
                ekey = None if exp.name == "none" else stable_hash(self.exposure_key_payload(mkey, exp, seed))
                for dfn in self.cfg.defenses:
                    used = DEFENSES.get(dfn.name).uses_exposure
                    cell_exp, cell_ekey = (exp, ekey) if used else (no_exposure, None)
                    ckey = stable_hash(self.cell_key_payload(mkey, cell_ekey, dfn))
                    if ckey in finished:
                        skipped.add(ckey)
                        continue
                    stages[mkey] = train
                    deps = (mkey,)
                    if cell_ekey is not None:
                        shown = f"expose {atk.name} with {exp.shown} seed={seed}"
                        stages[ekey] = Stage(ekey, "expose", shown, (mkey,),
                                             functools.partial(self._run_expose, atk, seed, exp, ekey))
                        deps = (mkey, ekey)
                    label = f"{atk.name} × {cell_exp.shown} × {dfn.shown} seed={seed}"
                    stages[ckey] = Stage(ckey, "cell", label, deps, functools.partial(
                        self._run_cell, atk, seed, cell_exp, dfn, ckey))
        return list(stages.values()), len(skipped)

    # ----------------------------------------------------------------- stages
    def _run_train(self, spec: MethodSpec, seed: int, key: str, deps: dict) -> Artifacts:
        with self.cache.lock("models", key):  # a concurrent runner waits here instead of training twice
            art = self.cache.load("models", key)
            if art is not None:
                log.info("poisoned model %s seed=%d: cache hit %s", spec.name, seed, key[:12])
                return Artifacts(key, art.tensors, art.meta, cached=True)
            t0 = time.perf_counter()  # includes any trigger generator / surrogate the attack trains
            model, extra = self.train_poisoned(spec, seed)
            seconds = time.perf_counter() - t0
            tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            meta = {"config": self.model_key_payload(spec, seed), "train_seconds": seconds, **extra,
                    "metrics": {**self.evaluate(model, self.attack(spec, seed)), "test_size": int(len(self.test_idx))},
                    "provenance": self.provenance}
            self.cache.save("models", key, tensors, meta)
            self.models_trained += 1
            return Artifacts(key, tensors, meta, cached=False)

    def train_poisoned(self, spec: MethodSpec, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        """Poison the victim-training split with the attack and train a fresh model on it."""
        attack = self.attack(spec, seed)
        train_idx = self.split(seed)[1]
        poisoned = attack.poison_train(self.data.train.images[train_idx], self.data.train.labels[train_idx], seed)
        images, labels = poisoned.images, poisoned.labels
        if self.cfg.dataset.defense_in_training:  # ablation: D_d joins training, never poisoned
            dd = self.defense_data(seed)
            images, labels = np.concatenate([images, dd.images]), np.concatenate([labels, dd.labels])
        model = train_classifier(self.new_model(seed), images, labels, self.recipe, seed,
                                 self.device, desc=f"train {spec.name}")
        return model, {"poison_count": int(len(poisoned.poison_indices)), "train_size": int(len(labels))}

    def _run_expose(self, atk: MethodSpec, seed: int, spec: MethodSpec, key: str, deps: dict) -> Artifacts:
        model_art: Artifacts = next(iter(deps.values()))
        with self.cache.lock("exposures", key):
            art = self.cache.load("exposures", key)
            if art is not None:
                return Artifacts(key, art.tensors, art.meta, cached=True)
            attack = self.attack(atk, seed)
            trace_metrics: dict[int, dict[str, float]] = {}
            monitor_seconds = [0.0]

            def monitor(step: int, model: nn.Module) -> None:  # test metrics for BEM; never seen by the method
                start = time.perf_counter()
                trace_metrics[step] = self.evaluate(model, attack, self.cfg.trace_eval_size)
                monitor_seconds[0] += time.perf_counter() - start

            model = self.load_model(model_art.tensors)
            trace_metrics[0] = self.evaluate(model, attack, self.cfg.trace_eval_size)
            t0 = time.perf_counter()
            result = build_method(EXPOSURES, spec, "exposure").expose(model, self.method_context(seed, monitor))
            seconds = time.perf_counter() - t0 - monitor_seconds[0]  # the method's own time, not the harness's
            trace = [{**row, **{f"test_{k}": v for k, v in trace_metrics.get(row["step"], {}).items()}}
                     for row in result.trace]
            exposed = self.evaluate(result.model, attack)
            meta = {"config": self.exposure_key_payload(model_art.key, spec, seed), "label": result.label,
                    "label_share": result.label_share, "shares": result.shares, "trace": trace,
                    "stop_reason": result.stop_reason, "expose_seconds": seconds,
                    "exposed_ca": exposed["ca"], "exposed_asr": exposed["asr"],
                    "bem_0": _bem([trace_metrics[0]]), "bem": _bem([trace_metrics[r["step"]] for r in result.trace
                                                                    if r["step"] in trace_metrics])}
            self.cache.save("exposures", key, result.model.state_dict(), meta)
            return Artifacts(key, result.model.state_dict(), meta, cached=False)

    def _run_cell(self, atk: MethodSpec, seed: int, exp: MethodSpec, dfn: MethodSpec, key: str,
                  deps: dict) -> dict[str, Any]:
        model_art: Artifacts = deps[next(iter(deps))]
        exp_art: Artifacts | None = next((a for k, a in deps.items() if k != model_art.key), None)
        attack = self.attack(atk, seed)
        model = self.load_model(model_art.tensors)
        exposed = None
        if exp_art is not None:
            m = exp_art.meta
            exposed = ExposureResult(self.load_model(exp_art.tensors), m["label"], m["label_share"], m["shares"],
                                     m["trace"], m["stop_reason"])
        before = self._before_metrics(model_art.key, model, attack)
        defense = build_method(DEFENSES, dfn, "defense")
        t0 = time.perf_counter()
        out = defense.defend(model, exposed, self.method_context(seed))
        defend_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        # a detector leaves the deployed model as it was: its CA/ASR are the undefended ones
        metrics = dict(before) if out.model is None else self.evaluate(out.model, attack)
        fields = dict(out.fields)
        if out.input_scorer is not None and not attack.is_clean:
            scores = self.input_filter_scores(out.input_scorer, attack)
            fields.update({f"{dfn.name}_{k}": v for k, v in input_filter_metrics(*scores, out.input_threshold).items()})
        if out.images:
            fields["images"] = self._save_images(key, out.images)
        timings = {"train": model_art.meta["train_seconds"], "defend": defend_seconds,
                   "evaluate": time.perf_counter() - t0}
        if out.alternatives:
            t0 = time.perf_counter()
            fields["diagnostic_sweep"] = self.diagnostic_sweep(out.alternatives, attack)
            timings["diagnostics"] = time.perf_counter() - t0
        record = self._record(atk, seed, exp, dfn, defense, key, model_art, exp_art, metrics, before, fields, timings)
        record["defense_returns_model"] = out.model is not None  # its CA/ASR are the defended pipeline's
        self.store.append(record)
        log.info("cell %s: %s", record["label"], {k: None if v is None else round(v, 4) for k, v in metrics.items()})
        return record

    def _record(self, atk, seed, exp, dfn, defense, key, model_art, exp_art, metrics, before, fields, timings) -> dict:
        attack = self.attack(atk, seed)
        record: dict[str, Any] = {
            "cell_key": key, "cache_key": model_art.key, "config_name": self.cfg.name,
            "label": f"{atk.name} × {exp.shown} × {dfn.shown}",
            "dataset": self.data.name, "dataset_note": self.data.note, "model": self.cfg.model.name,
            "model_note": "; ".join(self.setting_notes(attack)),
            "model_params": self.cfg.model.params, "recipe": self.recipe.name,
            "attack": atk.name, "attack_params": attack.params(), "target": attack.target,
            "poison_rate": attack.poison_rate, "exposure": None if exp.name == "none" else exp.name,
            "exposure_label": None if exp.name == "none" else exp.shown,
            "defense": dfn.name, "defense_label": dfn.shown, "defense_params": defense.params(),
            "defense_category": defense.category,
            "defense_uses_exposure": defense.uses_exposure,
            "seed": seed, **metrics, "ca_before": before["ca"], "asr_before": before["asr"],
            "config_hash": stable_hash(self.cfg.to_raw()),  # of OUT/config.yaml
            "defense_info": fields, "eval_test_size": int(len(self.test_idx)),
            "train_cached": model_art.cached, "timings": timings,
            "hardware": self.provenance["hardware"], "provenance": self.provenance,
        }
        if exp_art is not None:
            m = exp_art.meta
            timings["expose"] = m["expose_seconds"]
            record.update({"exposure_key": exp_art.key, "exposed_label": m["label"],
                           "exposed_label_share": m["label_share"], "exposed_ca": m["exposed_ca"],
                           "exposed_asr": m["exposed_asr"], "exposure_stop_reason": m["stop_reason"],
                           "exposure_trace": m["trace"], "bem": m["bem"], "bem_0": m["bem_0"]})
        return record


def warn_if_slow_precision(precision: str, device: str) -> None:
    """bf16 autocast pays off on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX); elsewhere
    oneDNN emulates it and a training step of the narrow ResNet-18 took 9x longer than fp32 (AVX2)."""
    if precision == "bf16" and not native_bf16(device):
        log.warning("recipe precision bf16 on %s (CPU capability %s) without native bf16: expect training to "
                    "be several times slower than fp32 (measured 9x on AVX2); `precision: auto` picks fp32 "
                    "here. The precision is part of the cache key, so changing it retrains the models",
                    device, torch.backends.cpu.get_cpu_capability())


def _bem(steps: list[dict[str, float]]) -> float | None:
    if not steps or any(s.get("asr") is None for s in steps):
        return None
    return backdoor_exposure_metric([s["asr"] for s in steps], [s["ca"] for s in steps])


_CACHE_KINDS = {"train": "models", "expose": "exposures"}


def run_grid(cfg: GridConfig, opts: RunOptions, executor: Executor | None = None) -> dict[str, Any]:
    """Run (or resume) the grid; returns a summary. Renders the leaderboard into ``opts.out_dir``."""
    from ebyd_bench.benchmark.io import atomic_write_json, atomic_write_text
    from ebyd_bench.reports import render_leaderboard
    from ebyd_bench.results import load_results

    from ebyd_bench.benchmark.domains.text import grid_run_class

    t0 = time.perf_counter()
    run = grid_run_class(cfg)(cfg, opts)  # TextGridRun for text datasets
    stages, skipped = run.plan(run.store.finished_cells())
    for stage in stages:  # fail before writing anything if a needed cached artifact is corrupted
        if stage.kind in _CACHE_KINDS:
            run.cache.verify(_CACHE_KINDS[stage.kind], stage.key)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    _log_to_file(opts.out_dir)
    atomic_write_text(opts.out_dir / "config.yaml", _dump_yaml(cfg))
    n_cells = sum(s.kind == "cell" for s in stages)
    log.info("%d cells to run, %d already finished (resume)%s", n_cells, skipped,
             "" if opts.shard[1] == 1 else f"; shard {opts.shard[0]}/{opts.shard[1]}")
    (executor or LocalExecutor()).run(stages)
    records = load_results(opts.out_dir)
    render_leaderboard(records, opts.out_dir)
    summary = {"config": cfg.name, "cells_run": n_cells, "cells_skipped": skipped,
               "models_trained": run.models_trained, **grid_statistics(records),
               "wall_seconds": time.perf_counter() - t0, "provenance": run.provenance}
    atomic_write_json(opts.out_dir / "summary.json", summary)
    return summary


def dry_run(cfg: GridConfig, opts: RunOptions) -> list[str]:
    """What ``run_grid`` would do, as printable lines: cells left to run, and which poisoned models and
    exposures come from the cache or would be computed. Writes nothing to ``opts.out_dir``."""
    from ebyd_bench.benchmark.domains.text import grid_run_class

    run = grid_run_class(cfg)(cfg, opts)
    stages, skipped = run.plan(run.store.finished_cells())
    cells = [s for s in stages if s.kind == "cell"]
    shard = "" if opts.shard[1] == 1 else f" (shard {opts.shard[0]}/{opts.shard[1]})"
    lines = [f"{cfg.name}{shard}: {len(cells)} cells to run, {skipped} already finished in {opts.out_dir}"]
    if cfg.recipe.get("precision") == "auto":
        lines.append(f"  precision: auto → {run.recipe.precision} on {opts.device}")
    for kind, noun in (("train", "poisoned models"), ("expose", "exposures")):
        part = [s for s in stages if s.kind == kind]
        cached = {s.key for s in part if run.cache.exists(_CACHE_KINDS[kind], s.key)}
        lines.append(f"  {noun}: {len(cached)} in the cache, {len(part) - len(cached)} to compute")
        lines += [f"    {s.label}: {'cached' if s.key in cached else 'to compute'} ({s.key[:12]})" for s in part]
    lines += [f"    cell {s.label}" for s in cells]
    return lines


def _log_to_file(out: Path) -> None:
    """Mirror the run's log into ``OUT/run.log`` (once per folder per process)."""
    path = str((out / "run.log").resolve())
    root = logging.getLogger("benchmark")
    if any(getattr(h, "baseFilename", None) == path for h in root.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _dump_yaml(cfg: GridConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_raw(), sort_keys=False)
