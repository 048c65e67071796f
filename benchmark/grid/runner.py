"""Run a grid: plan train → expose → defend+evaluate stages, execute them, write records.

This module knows nothing about images or text: the grid's :class:`~ebyd_bench.benchmark.grid.domain.Domain`
loads data, trains victims and evaluates models. Here:

* :class:`Keys` hashes everything that determines a poisoned model, an exposure and a cell;
* :func:`plan` emits one :class:`~ebyd_bench.benchmark.grid.executor.Stage` per poisoned model, per
  exposure of it and per grid cell; cells already in ``OUT/results.jsonl`` are skipped and so are
  the stages only they needed;
* :class:`StageRunner` executes stages in one process (artifacts cached, records appended);
* :func:`run_grid` returns the records and a summary: the CLI renders them.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ebyd_bench.benchmark.cache import ArtifactCache, key_stable, stable_hash
from ebyd_bench.benchmark.errors import CacheError
from ebyd_bench.benchmark.grid.config import Grid, ResolvedMethod
from ebyd_bench.benchmark.grid.domain import Domain
from ebyd_bench.benchmark.grid.executor import Executor, LocalExecutor, Stage
from ebyd_bench.benchmark.io import atomic_write, atomic_write_text
from ebyd_bench.benchmark.methods import ExposureResult
from ebyd_bench.benchmark.metrics import backdoor_exposure_metric, input_filter_metrics
from ebyd_bench.benchmark.provenance import provenance
from ebyd_bench.benchmark.registries import DOMAINS
from ebyd_bench.results import CellRecord, ResultStore, load_results
from ebyd_bench.results.schema import WEAK_BACKDOOR_ASR

log = logging.getLogger(__name__)

#: bump when training, splitting or poisoning code changes results: it enters every model key
HARNESS_VERSION = "1"
#: the stage kinds whose outputs are cached, and their cache folders
CACHE_KINDS = {"train": "models", "expose": "exposures"}


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
    tensors: dict[str, torch.Tensor] | None  # None: left in the cache (sent to another process without them)
    meta: dict[str, Any]
    cached: bool

    def without_tensors(self) -> "Artifacts":
        """What crosses a process boundary: the key, metadata and whether it came from the cache."""
        return Artifacts(self.key, None, self.meta, self.cached)


@dataclass
class RunResult:
    """What :func:`run_grid` returns: every record in ``OUT/results.jsonl`` and counts of this run."""

    records: pd.DataFrame
    summary: dict[str, Any]


def build_domain(grid: Grid, opts: RunOptions) -> Domain:
    """The grid's domain (its dataset loaded) for this process."""
    return DOMAINS.get(grid.domain)(grid, opts.data_root, ArtifactCache(opts.cache_dir), opts.device)


# --------------------------------------------------------------------- keys
class Keys:
    """Cache keys: a hash of every input that determines a poisoned model, an exposure or a cell."""

    def __init__(self, grid: Grid, domain: Domain) -> None:
        self.grid, self.domain = grid, domain
        self._eval = {"test_idx": stable_hash(domain.test_idx.tolist())}

    def model_payload(self, attack: ResolvedMethod, seed: int) -> dict[str, Any]:
        model = self.grid.config.model
        return {
            "kind": "poisoned_model", "harness_version": HARNESS_VERSION, "dataset": self.domain.dataset_key(),
            "attack": {"name": attack.name, "version": attack.method.version, "params": attack.method.key_params()},
            "model": {"name": model.name, "params": model.params},
            "recipe": key_stable(asdict(self.domain.recipe)), "seed": seed,
            **self.domain.model_key_extras(attack),
        }

    def exposure_payload(self, model_key: str, exposure: ResolvedMethod, seed: int) -> dict[str, Any]:
        method = exposure.method
        return {"kind": "exposure", "model": model_key, "seed": seed,
                "exposure": {"name": exposure.name, "version": method.version, "params": key_stable(method.params())},
                "eval": {**self._eval, "trace": self.grid.config.trace_eval_size}}

    def cell_payload(self, model_key: str, exposure_key: str | None, defense: ResolvedMethod) -> dict[str, Any]:
        method = defense.method
        evaluation: dict[str, Any] = dict(self._eval)
        if method.category == "input_filtering":  # only input filters are scored on this many inputs
            evaluation["detection"] = self.grid.config.detection_eval_size
        return {"kind": "cell", "model": model_key, "exposure": exposure_key,
                "defense": {"name": defense.name, "version": method.version, "params": key_stable(method.params())},
                "eval": evaluation}

    def model(self, attack: ResolvedMethod, seed: int) -> str:
        return stable_hash(self.model_payload(attack, seed))

    def exposure(self, model_key: str, exposure: ResolvedMethod, seed: int) -> str:
        return stable_hash(self.exposure_payload(model_key, exposure, seed))

    def cell(self, model_key: str, exposure_key: str | None, defense: ResolvedMethod) -> str:
        return stable_hash(self.cell_payload(model_key, exposure_key, defense))


# --------------------------------------------------------------------- planning
def plan(grid: Grid, keys: Keys, finished: set[str], shard: tuple[int, int] = (0, 1)) -> tuple[list[Stage], int]:
    """Stages for every unfinished cell of this shard (and the stages they need); also the count skipped.

    A defense that ignores the exposure (``uses_exposure = False``) gets one cell per model,
    whatever the exposures listed: its result cannot depend on them.
    """
    stages: dict[str, Stage] = {}
    skipped: set[str] = set()
    index, count = shard
    for seed, attack in grid.models()[index::count]:
        mkey = keys.model(attack, seed)
        train = Stage(mkey, "train", f"train {attack.name} seed={seed}", (), seed, attack.name)
        for exposure in [e for e in grid.exposures] or [None]:
            exposed = exposure is not None and exposure.method is not None
            ekey = keys.exposure(mkey, exposure, seed) if exposed else None
            for defense in grid.defenses:
                cell_exposure, cell_ekey = (exposure, ekey) if defense.method.uses_exposure else (None, None)
                ckey = keys.cell(mkey, cell_ekey, defense)
                if ckey in finished:
                    skipped.add(ckey)
                    continue
                stages[mkey] = train
                deps: tuple[str, ...] = (mkey,)
                if cell_ekey is not None:
                    stages[ekey] = Stage(ekey, "expose", f"expose {attack.name} with {exposure.shown} seed={seed}",
                                         (mkey,), seed, attack.name, exposure.shown)
                    deps = (mkey, ekey)
                exp_label = cell_exposure.shown if cell_exposure is not None else "none"
                stages[ckey] = Stage(ckey, "cell", f"{attack.name} × {exp_label} × {defense.shown} seed={seed}", deps,
                                     seed, attack.name, cell_exposure.shown if cell_ekey else None, defense.shown)
    return list(stages.values()), len(skipped)


# --------------------------------------------------------------------- execution
class StageRunner:
    """Executes the stages of one grid in this process: the domain (data loaded once) and the artifact
    cache with its locks. Callable as an executor's ``execute``; a cell returns its record, which the
    driver appends to the result store (:func:`run_grid`)."""

    def __init__(self, grid: Grid, opts: RunOptions, domain: Domain | None = None) -> None:
        self.grid, self.opts = grid, opts
        self.domain = domain or build_domain(grid, opts)
        self.keys = Keys(grid, self.domain)
        self.cache = self.domain.cache
        self.store = ResultStore(opts.out_dir)
        self.provenance = provenance(opts.device)
        self._methods = {(m.kind, m.name if m.kind == "attack" else m.shown): m
                         for m in grid.attacks + grid.exposures + grid.defenses}
        self._before: dict[str, dict[str, float]] = {}

    def method(self, kind: str, name: str) -> ResolvedMethod:
        """The grid's attack (by name), exposure or defense (by label) that a stage names."""
        return self._methods[(kind, name)]

    def __call__(self, stage: Stage, inputs: dict[str, Any]) -> Any:
        """Execute ``stage``; ``inputs`` holds its parents' outputs, or lacks them (another process ran
        them): their artifacts are then read from the cache."""
        _reseed(stage.key)  # a stage's result must not depend on what ran before it in this process
        attack = self.method("attack", stage.attack)
        if stage.kind == "train":
            return self.train(attack, stage.seed, stage.key)
        model_art = self._input("models", stage.deps[0], inputs)
        if stage.kind == "expose":
            return self.expose(attack, stage.seed, self.method("exposure", stage.exposure), stage.key, model_art)
        exposure = None if stage.exposure is None else self.method("exposure", stage.exposure)
        exp_art = self._input("exposures", stage.deps[1], inputs) if len(stage.deps) > 1 else None
        return self.cell(attack, stage.seed, exposure, self.method("defense", stage.defense), stage.key,
                         model_art, exp_art)

    def keep(self, stage: Stage, output: Any) -> None:
        """Store what a finished stage produced that is not in the cache: a cell's record (called by the
        driver, whichever process executed the stage)."""
        if stage.kind == "cell":
            self.store.append(output)

    def _input(self, kind: str, key: str, inputs: dict[str, Any]) -> Artifacts:
        given = inputs.get(key)
        if given is not None and given.tensors is not None:
            return given
        art = self.cache.load(kind, key)
        if art is None:
            raise CacheError(f"{kind} {key[:12]} is missing from the cache {self.cache.root} although the stage "
                             "that computes it finished; rerun the grid to compute it again")
        return Artifacts(key, art.tensors, art.meta, cached=True if given is None else given.cached)

    def train(self, attack: ResolvedMethod, seed: int, key: str) -> Artifacts:
        with self.cache.lock("models", key):  # a concurrent runner waits here instead of training twice
            art = self.cache.load("models", key)
            if art is not None:
                log.info("poisoned model %s seed=%d: cache hit %s", attack.name, seed, key[:12])
                return Artifacts(key, art.tensors, art.meta, cached=True)
            t0 = time.perf_counter()  # includes any trigger generator / surrogate the attack trains
            model, extra = self.domain.train_poisoned(attack, seed)
            seconds = time.perf_counter() - t0
            tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            metrics = self.domain.evaluate(model, self.domain.attack(attack, seed))
            meta = {"config": self.keys.model_payload(attack, seed), "train_seconds": seconds, **extra,
                    "metrics": {**metrics, "test_size": int(len(self.domain.test_idx))},
                    "provenance": self.provenance}
            self.cache.save("models", key, tensors, meta)
            return Artifacts(key, tensors, meta, cached=False)

    def expose(self, attack: ResolvedMethod, seed: int, exposure: ResolvedMethod, key: str,
               model_art: Artifacts) -> Artifacts:
        with self.cache.lock("exposures", key):
            art = self.cache.load("exposures", key)
            if art is not None:
                return Artifacts(key, art.tensors, art.meta, cached=True)
            instance = self.domain.attack(attack, seed)
            trace_size = self.grid.config.trace_eval_size
            trace_metrics: dict[int, dict[str, float]] = {}
            monitor_seconds = [0.0]

            def monitor(step: int, model: nn.Module) -> None:  # test metrics for BEM; never seen by the method
                start = time.perf_counter()
                trace_metrics[step] = self.domain.evaluate(model, instance, trace_size)
                monitor_seconds[0] += time.perf_counter() - start

            model = self.domain.load_model(model_art.tensors)
            trace_metrics[0] = self.domain.evaluate(model, instance, trace_size)
            t0 = time.perf_counter()
            result = exposure.fresh().expose(model, self.domain.method_context(seed, monitor))
            seconds = time.perf_counter() - t0 - monitor_seconds[0]  # the method's own time, not the harness's
            trace = [{**row, **{f"test_{k}": v for k, v in trace_metrics.get(row["step"], {}).items()}}
                     for row in result.trace]
            exposed = self.domain.evaluate(result.model, instance)
            meta = {"config": self.keys.exposure_payload(model_art.key, exposure, seed), "label": result.label,
                    "label_share": result.label_share, "shares": result.shares, "trace": trace,
                    "stop_reason": result.stop_reason, "expose_seconds": seconds,
                    "exposed_ca": exposed["ca"], "exposed_asr": exposed["asr"],
                    "bem_0": _bem([trace_metrics[0]]), "bem": _bem([trace_metrics[r["step"]] for r in result.trace
                                                                    if r["step"] in trace_metrics])}
            self.cache.save("exposures", key, result.model.state_dict(), meta)
            return Artifacts(key, result.model.state_dict(), meta, cached=False)

    def cell(self, attack: ResolvedMethod, seed: int, exposure: ResolvedMethod | None, defense: ResolvedMethod,
             key: str, model_art: Artifacts, exp_art: Artifacts | None) -> CellRecord:
        instance = self.domain.attack(attack, seed)
        model = self.domain.load_model(model_art.tensors)
        exposed = None
        if exp_art is not None:
            m = exp_art.meta
            exposed = ExposureResult(self.domain.load_model(exp_art.tensors), m["label"], m["label_share"],
                                     m["shares"], m["trace"], m["stop_reason"])
        before = self._before_metrics(model_art.key, model, instance)
        method = defense.fresh()
        t0 = time.perf_counter()
        out = method.defend(model, exposed, self.domain.method_context(seed))
        defend_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        # a detector leaves the deployed model as it was: its CA/ASR are the undefended ones
        metrics = dict(before) if out.model is None else self.domain.evaluate(out.model, instance)
        fields = dict(out.fields)
        if out.input_scorer is not None and not instance.is_clean:
            clean, triggered = self.domain.filter_inputs(instance, self.grid.config.detection_eval_size)
            scores = np.asarray(out.input_scorer(clean), float), np.asarray(out.input_scorer(triggered), float)
            fields.update({f"{defense.name}_{k}": v
                           for k, v in input_filter_metrics(*scores, out.input_threshold).items()})
        if out.images:
            fields["images"] = self._save_images(key, out.images)
        timings = {"train": model_art.meta["train_seconds"], "defend": defend_seconds,
                   "evaluate": time.perf_counter() - t0}
        if out.alternatives:
            t0 = time.perf_counter()
            fields["diagnostic_sweep"] = self._diagnostic_sweep(out.alternatives, instance)
            timings["diagnostics"] = time.perf_counter() - t0
        record = self._record(attack, instance, seed, exposure, defense, method, key, model_art, exp_art,
                              metrics, before, fields, timings, out.model is not None)
        log.info("cell %s: %s", record.label, {k: None if v is None else round(v, 4) for k, v in metrics.items()})
        return record

    def _before_metrics(self, model_key: str, model: nn.Module, attack: Any) -> dict[str, float]:
        """Metrics of the undefended model, computed once per run (for deviations)."""
        if model_key not in self._before:
            before = self.domain.evaluate(model, attack)
            if before["asr"] is not None and before["asr"] < WEAK_BACKDOOR_ASR:  # None: the clean control
                log.warning("victim %s (model %s) has ASR %.1f %% before any defense: its backdoor was not "
                            "implanted, so a defense's ASR on it measures nothing", attack.name, model_key[:12],
                            100 * before["asr"])
            self._before[model_key] = before
        return self._before[model_key]

    def _diagnostic_sweep(self, alternatives: list, attack: Any) -> list[dict[str, Any]]:
        """Test CA/ASR of every alternative a method chose among, on the ``trace_eval_size`` prefix of
        the test subset; for analysis only (docs/methods.md §7.1-6), measured after the method returned."""
        rows = []
        for label, build in alternatives:
            metrics = self.domain.evaluate(build(), attack, self.grid.config.trace_eval_size)
            rows.append({**label, **{f"test_{k}": v for k, v in metrics.items()}})
        return rows

    def _save_images(self, cell_key: str, images: dict[str, np.ndarray]) -> dict[str, str]:
        """Write a defense's images (HWC or HW floats in [0, 1]) as PNGs under OUT/artifacts/."""
        from PIL import Image

        folder = self.opts.out_dir / "artifacts" / cell_key[:16]
        paths = {}
        for name, img in images.items():
            arr = (np.clip(np.asarray(img, float), 0, 1) * 255).round().astype(np.uint8)
            path = folder / f"{name}.png"
            atomic_write(path, lambda tmp, a=arr: Image.fromarray(a.squeeze()).save(tmp, format="PNG"))
            paths[name] = str(path.relative_to(self.opts.out_dir))
        return paths

    def _record(self, attack: ResolvedMethod, instance: Any, seed: int, exposure: ResolvedMethod | None,
                defense: ResolvedMethod, method: Any, key: str, model_art: Artifacts, exp_art: Artifacts | None,
                metrics: dict[str, Any], before: dict[str, Any], fields: dict[str, Any], timings: dict[str, float],
                returns_model: bool) -> CellRecord:
        notes = self.domain.setting_notes(instance)
        if fields.get("note"):  # e.g. ONION's stand-in LM: the number must carry it
            notes.append(fields["note"])
        exposure_label = None if exposure is None else exposure.shown
        record: dict[str, Any] = {
            "cell_key": key, "cache_key": model_art.key, "config_name": self.grid.name, "domain": self.grid.domain,
            "label": f"{attack.name} × {exposure_label or 'none'} × {defense.shown}",
            "dataset": self.domain.data.name, "dataset_note": self.domain.data.note,
            "model": self.grid.config.model.name, "model_note": "; ".join(n for n in notes if n),
            "model_params": self.grid.config.model.params, "recipe": self.domain.recipe.name,
            "attack": attack.name, "attack_params": instance.params(), "target": instance.target,
            "poison_rate": instance.poison_rate, "exposure": None if exposure is None else exposure.name,
            "exposure_label": exposure_label, "defense": defense.name, "defense_label": defense.shown,
            "defense_params": method.params(), "defense_category": method.category,
            "defense_uses_exposure": method.uses_exposure,
            "seed": seed, **metrics, "ca_before": before["ca"], "asr_before": before["asr"],
            "config_hash": stable_hash(self.grid.to_raw()),  # of OUT/config.yaml
            "defense_info": fields, "eval_test_size": int(len(self.domain.test_idx)),
            "train_cached": model_art.cached, "timings": timings,
            "hardware": self.provenance["hardware"], "provenance": self.provenance,
            "defense_returns_model": returns_model,  # its CA/ASR are the defended pipeline's
        }
        if exp_art is not None:
            m = exp_art.meta
            timings["expose"] = m["expose_seconds"]
            record.update({"exposure_key": exp_art.key, "exposed_label": m["label"],
                           "exposed_label_share": m["label_share"], "exposed_ca": m["exposed_ca"],
                           "exposed_asr": m["exposed_asr"], "exposure_stop_reason": m["stop_reason"],
                           "exposure_trace": m["trace"], "bem": m["bem"], "bem_0": m["bem_0"]})
        return CellRecord(**record)


def _reseed(key: str) -> None:
    """Seed the global RNGs from a stage's key: methods seed what they use, and this makes a stage that
    forgets to independent of the stages a process ran before it (order, shards, workers)."""
    seed = int(key[:8], 16)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _bem(steps: list[dict[str, float]]) -> float | None:
    if not steps or any(s.get("asr") is None for s in steps):
        return None
    return backdoor_exposure_metric([s["asr"] for s in steps], [s["ca"] for s in steps])


# --------------------------------------------------------------------- entry points
def prepare(grid: Grid, opts: RunOptions) -> tuple[StageRunner, list[Stage], int]:
    """The stage runner of this process and the stages left to run (and how many cells are done)."""
    runner = StageRunner(grid, opts)
    stages, skipped = plan(grid, runner.keys, runner.store.finished_cells(), opts.shard)
    return runner, stages, skipped


def run_grid(grid: Grid, opts: RunOptions, executor: Executor | None = None) -> RunResult:
    """Run (or resume) the grid into ``opts.out_dir``; returns every record there and a summary.

    Writes ``results.jsonl``, ``config.yaml`` and ``run.log``; rendering is the caller's (the CLI's)."""
    t0 = time.perf_counter()
    runner, stages, skipped = prepare(grid, opts)
    for stage in stages:  # fail before writing anything if a needed cached artifact is corrupted
        if stage.kind in CACHE_KINDS:
            runner.cache.verify(CACHE_KINDS[stage.kind], stage.key)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    log_to_file(opts.out_dir)
    atomic_write_text(opts.out_dir / "config.yaml", _dump_yaml(grid))
    n_cells = sum(s.kind == "cell" for s in stages)
    log.info("%d cells to run, %d already finished (resume)%s", n_cells, skipped,
             "" if opts.shard[1] == 1 else f"; shard {opts.shard[0]}/{opts.shard[1]}")
    trained = [0]

    def on_done(stage: Stage, output: Any) -> None:  # in this (the driver) process
        runner.keep(stage, output)
        if stage.kind == "train" and not output.cached:
            trained[0] += 1

    (executor or LocalExecutor()).run(stages, runner, on_done)
    summary = {"config": grid.name, "cells_run": n_cells, "cells_skipped": skipped,
               "models_trained": trained[0], "wall_seconds": time.perf_counter() - t0,
               "provenance": runner.provenance}
    return RunResult(load_results(opts.out_dir), summary)


def dry_run(grid: Grid, opts: RunOptions) -> list[str]:
    """What :func:`run_grid` would do, as printable lines: cells left to run, and which poisoned models
    and exposures come from the cache or would be computed. Writes nothing to ``opts.out_dir``."""
    runner, stages, skipped = prepare(grid, opts)
    cells = [s for s in stages if s.kind == "cell"]
    shard = "" if opts.shard[1] == 1 else f" (shard {opts.shard[0]}/{opts.shard[1]})"
    lines = [f"{grid.name}{shard}: {len(cells)} cells to run, {skipped} already finished in {opts.out_dir}"]
    if grid.config.recipe.get("precision") == "auto":
        lines.append(f"  precision: auto → {runner.domain.recipe.precision} on {opts.device}")
    for kind, noun in (("train", "poisoned models"), ("expose", "exposures")):
        part = [s for s in stages if s.kind == kind]
        cached = {s.key for s in part if runner.cache.exists(CACHE_KINDS[kind], s.key)}
        lines.append(f"  {noun}: {len(cached)} in the cache, {len(part) - len(cached)} to compute")
        lines += [f"    {s.label}: {'cached' if s.key in cached else 'to compute'} ({s.key[:12]})" for s in part]
    lines += [f"    cell {s.label}" for s in cells]
    return lines


def log_to_file(out: Path) -> None:
    """Mirror the run's log into ``OUT/run.log`` (once per folder per process; the workers of a
    concurrent run append to the same file, a line at a time)."""
    path = str((out / "run.log").resolve())
    root = logging.getLogger("ebyd_bench")
    if any(getattr(h, "baseFilename", None) == path for h in root.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _dump_yaml(grid: Grid) -> str:
    import yaml

    return yaml.safe_dump(grid.to_raw(), sort_keys=False)
