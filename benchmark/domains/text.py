"""Text grids: :class:`TextGridRun` is :class:`ebyd_bench.benchmark.grid.runner.GridRun` with text data, victims,
poisoning, training and evaluation; planning, caching, exposures, cells and records are inherited.

* data split: 500 defense sentences (``D_d``) drawn from the training split with the seed, the
  victim trained on the rest (or ``train_subset`` of it) — ``D_d`` is never poisoned nor trained on;
* victims: the registered text model factory (``minilm-l6``, ``bert-base-uncased``, ``hf-text``);
  cached as safetensors state dicts, reloaded without re-reading pretrained weights;
* poisoning/training: the attack's ``poison_train`` and ``train`` (its own procedure for SOS,
  RIPPLe and LWP) under a :class:`~benchmark.text.training.TextRecipe`;
* evaluation: CACC on the clean test subset, ASR on its triggered non-target samples (FTR for
  SOS/LWP); test triggers are drawn with a fixed evaluation seed so seeds share the same test set;
* ``model_note`` names the victim (stand-ins say so) and every deviation from the paper's setting;
* methods get a :class:`~benchmark.text.common.TextMethodContext`: ``D_d`` plus the offline ONION LM
  (built and cached here) and an in-process memo — never a path to data or to the cache.

The runner picks this class with :func:`grid_run_class`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

import ebyd_bench.adapters.text_data  # noqa: F401  (registers the text datasets, victims, attacks and methods)
import ebyd_bench.adapters.transformers_models  # noqa: F401
import ebyd_bench.attacks_registry.text  # noqa: F401
import ebyd_bench.benchmark.text  # noqa: F401
from ebyd_bench.adapters.text_data import read_tsv
from ebyd_bench.attacks_registry.text.base import TextAttack, TextAttackContext
from ebyd_bench.benchmark.cache import stable_hash
from ebyd_bench.benchmark.grid.config import GridConfig, MethodSpec, build_dataclass, build_method
from ebyd_bench.benchmark.errors import DataError
from ebyd_bench.benchmark.registries import ATTACKS, MODELS
from ebyd_bench.benchmark.grid.runner import GridRun, RunOptions
from ebyd_bench.benchmark.text.common import TextDefenseData, TextMethodContext
from ebyd_bench.benchmark.text.domain import check_domains, dataset_domain
from ebyd_bench.benchmark.text.metrics import text_metrics
from ebyd_bench.benchmark.text.ngram import KneserNeyTrigram
from ebyd_bench.benchmark.text.training import TextRecipe

log = logging.getLogger(__name__)

#: bump when text splitting, poisoning or training changes results: it enters every text model key
TEXT_HARNESS_VERSION = "1"
#: test-time trigger positions are drawn with this seed, so every run seed is scored on the same inputs
EVAL_SEED = 12345
#: the paper's maximum lengths (reference §2.4); other values are noted next to the numbers
PAPER_MAX_LENGTH = {"imdb": 512}
#: the training splits ONION's offline n-gram LM is fitted on (those present under the data root)
NGRAM_CORPORA = ("sst2", "imdb", "agnews", "twitter")
NGRAM_VERSION = "1"


def grid_run_class(cfg: GridConfig) -> type[GridRun]:
    """The runner class for ``cfg``'s dataset domain (what ``run_grid`` instantiates)."""
    return TextGridRun if dataset_domain(cfg.dataset.name) == "text" else GridRun


def text_recipe(cfg: GridConfig) -> TextRecipe:
    return build_dataclass(TextRecipe, cfg.recipe, "recipe")


class TextGridRun(GridRun):
    """:class:`GridRun` for a text dataset: text data, victims, poisoning, training and metrics."""

    def __init__(self, cfg: GridConfig, opts: RunOptions) -> None:
        super().__init__(cfg, opts)
        check_domains(cfg)
        self.recipe = text_recipe(cfg)
        for spec in cfg.attacks:  # an unavailable attack (Syntactic without paraphrases) fails here
            self.attack(spec, cfg.seeds[0])

    # ----------------------------------------------------------------- data and models
    def _texts(self, split: str, idx: np.ndarray) -> tuple[list[str], np.ndarray]:
        part = getattr(self.data, split)
        return [part.texts[i] for i in idx], part.labels[idx]

    def defense_data(self, seed: int) -> TextDefenseData:
        texts, labels = self._texts("train", self.split(seed)[0])
        return TextDefenseData(texts, labels, self.data.num_classes)

    def new_model(self, seed: int | None = None, **overrides: Any) -> nn.Module:
        if seed is not None:
            torch.manual_seed(seed)
        params = {**self.cfg.model.params, **overrides}
        model = MODELS.get(self.cfg.model.name)(num_classes=self.data.num_classes, **params)
        self._memo["model_note"] = model.note
        return model.to(self.device)

    def load_model(self, tensors: dict[str, torch.Tensor]) -> nn.Module:
        model = self.new_model(pretrained=False)
        model.load_state_dict(tensors)
        return model.eval()

    def attack_context(self, attack: TextAttack, seed: int) -> TextAttackContext:
        train_texts, train_labels = self._texts("train", self.split(seed)[1])
        ds = self.cfg.dataset
        base = {"dataset": self.data.digest, "train_subset": ds.train_subset, "defense_size": ds.defense_size,
                "seed": seed, "model": {"name": self.cfg.model.name, "params": self.cfg.model.params},
                "version": TEXT_HARNESS_VERSION}
        return TextAttackContext(self.data.name, self.opts.data_root, self.data.num_classes, self.device,
                                 self.recipe, self.new_model, self.part_cache("text_part", base), train_texts, train_labels,
                                 list(self.data.dev.texts), self.data.dev.labels)

    def method_context(self, seed: int, monitor=None) -> TextMethodContext:
        ctx = TextMethodContext(self.defense_data(seed), seed, self.device, model_factory=self.new_model,
                                offline_lm=self.offline_lm, memo=self._memo.setdefault("method_memo", {}))
        if monitor is not None:
            ctx.monitor = monitor
        return ctx

    def offline_lm(self) -> KneserNeyTrigram:
        """ONION's offline stand-in for GPT-2: a Kneser–Ney trigram fitted once on the training splits of
        the bundled corpora under the data root (those present; never a test split), cached as an artifact."""
        if "offline_lm" not in self._memo:
            files = [f for f in (self.opts.data_root / n / "train.tsv" for n in NGRAM_CORPORA) if f.is_file()]
            if not files:
                raise DataError(f"onion lm=ngram: no training corpus under {self.opts.data_root} "
                                f"({', '.join(NGRAM_CORPORA)})")
            params = {"version": NGRAM_VERSION, "discount": 0.75,
                      "corpora": {f.parent.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}}
            tensors = self.part_cache("text_part", {"kind": "offline_lm"})("onion_ngram_lm", params, lambda: KneserNeyTrigram.fit(
                [t for f in files for t in read_tsv(f).texts]).to_tensors())
            lm = KneserNeyTrigram.from_tensors(tensors)
            lm.name = f"kneser-ney-trigram[{'+'.join(f.parent.name for f in files)}]"
            self._memo["offline_lm"] = lm
        return self._memo["offline_lm"]

    # ----------------------------------------------------------------- evaluation (harness only)
    def _test_sets(self, attack: TextAttack, limit: int | None = None) -> tuple:
        key = ("test", attack.name, stable_hash(attack.params()), limit)
        if key not in self._memo:
            idx = self.test_idx[:limit] if limit else self.test_idx
            texts, labels = self._texts("test", idx)
            poisoned = attack.poison_test(texts, labels, EVAL_SEED, rows=idx)
            negatives = None if limit or not attack.has_negatives else attack.negative_test(texts, labels, EVAL_SEED)
            self._memo[key] = ((texts, labels), poisoned, negatives)
        return self._memo[key]

    def evaluate(self, model: nn.Module, attack: TextAttack, limit: int | None = None) -> dict[str, float]:
        """CACC (``ca``), CACC without the target class, ASR on triggered non-target samples (FTR if any)."""
        clean, poisoned, negatives = self._test_sets(attack, limit)
        return text_metrics(model, clean, None if attack.is_clean else poisoned, attack.target, self.device,
                            negatives)

    def input_filter_scores(self, scorer, attack: TextAttack) -> tuple[np.ndarray, np.ndarray]:
        (texts, _), (ptexts, _), _ = self._test_sets(attack)
        n = self.cfg.detection_eval_size
        return np.asarray(scorer(texts[:n]), float), np.asarray(scorer(ptexts[:n]), float)

    def setting_notes(self, attack: TextAttack) -> list[str]:
        """The victim that produced the numbers, then every deviation from the paper's text setting."""
        notes = [f"victim {self._memo.get('model_note') or self.cfg.model.name}"]
        epochs = self.recipe.epochs_for(attack.paper_epochs)
        if epochs != attack.paper_epochs:
            notes.append(f"{epochs} training epochs instead of the paper's {attack.paper_epochs}")
        reference = asdict(TextRecipe())
        changed = {k: v for k, v in asdict(self.recipe).items() if k not in ("name", "epochs") and v != reference[k]}
        if changed:
            notes.append(f"recipe '{self.recipe.name}': " + ", ".join(f"{k}={v} (reference {reference[k]})"
                                                                       for k, v in changed.items()))
        max_length = self.cfg.model.params.get("max_length", 128)
        paper_length = PAPER_MAX_LENGTH.get(self.data.name, 128)
        if max_length != paper_length:
            notes.append(f"max length {max_length} tokens instead of {paper_length}")
        return notes + self.subset_and_attack_notes(attack, "sentences")

    # ----------------------------------------------------------------- keys and stages
    def model_key_payload(self, spec: MethodSpec, seed: int) -> dict[str, Any]:
        payload = super().model_key_payload(spec, seed)
        attack = build_method(ATTACKS, spec, "attack")
        files = attack.trigger_files(self.opts.data_root, self.data.name)
        payload["text"] = {"version": TEXT_HARNESS_VERSION, "trigger_files": {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "missing" for f in files}}
        return payload

    def train_poisoned(self, spec: MethodSpec, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        """Poison the victim-training split and train with the attack's procedure."""
        attack = self.attack(spec, seed)
        train_idx = self.split(seed)[1]
        texts, labels = self._texts("train", train_idx)
        poisoned = attack.poison_train(texts, labels, seed, rows=train_idx)
        model = attack.train(self.new_model(seed), poisoned, self.attack_context(attack, seed), seed)
        return model, {"poison_count": int(len(poisoned.poison_indices)), "train_size": int(len(train_idx)),
                       "attack_train_size": len(poisoned.texts), "attack_info": poisoned.info}

    def _record(self, atk, seed, exp, dfn, defense, key, model_art, exp_art, metrics, before, fields, timings) -> dict:
        record = super()._record(atk, seed, exp, dfn, defense, key, model_art, exp_art, metrics, before, fields,
                                 timings)
        if fields.get("note"):  # e.g. ONION's stand-in LM: the number must carry it
            record["model_note"] = "; ".join(n for n in (record["model_note"], fields["note"]) if n)
        return record
