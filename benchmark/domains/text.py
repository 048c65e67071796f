"""Text grids (SST-2, IMDB, AG's News, Twitter): sentences, transformer victims, attack-specific training.

* split: ``defense_size`` defense sentences (``D_d``) drawn from the training split with the seed,
  the victim trained on the rest (or ``train_subset`` of it) — ``D_d`` is never poisoned nor trained on;
* victims: the registered text model factory (``minilm-l6``, ``bert-base-uncased``, ``hf-text``);
  cached as safetensors state dicts, reloaded without re-reading pretrained weights;
* poisoning/training: the attack's ``poison_train`` and ``train`` (its own procedure for SOS,
  RIPPLe and LWP) under a :class:`~ebyd_bench.benchmark.text.training.TextRecipe`;
* evaluation: CACC on the clean test subset, ASR on its triggered non-target samples (FTR for
  SOS/LWP); test triggers are drawn with a fixed evaluation seed so seeds share the same test set;
* notes name the victim (stand-ins say so) and every deviation from the paper's setting;
* methods get a :class:`~ebyd_bench.benchmark.text.common.TextMethodContext`: ``D_d`` plus the offline
  ONION LM (built and cached here) and an in-process memo — never a path to data or to the cache.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ebyd_bench.adapters.text_data import read_tsv
from ebyd_bench.attacks_registry.text.base import TextAttack, TextAttackContext
from ebyd_bench.benchmark.cache import ArtifactCache
from ebyd_bench.benchmark.errors import ConfigError, DataError
from ebyd_bench.benchmark.grid.config import Grid, GridConfig, ResolvedMethod
from ebyd_bench.benchmark.grid.domain import Domain, Monitor
from ebyd_bench.benchmark.registries import DOMAINS
from ebyd_bench.benchmark.text.common import TextDefenseData, TextMethodContext
from ebyd_bench.benchmark.text.metrics import text_metrics
from ebyd_bench.benchmark.text.ngram import KneserNeyTrigram
from ebyd_bench.benchmark.text.training import TextRecipe

log = logging.getLogger(__name__)

#: bump when text splitting, poisoning or training changes results: it enters every text model key
TEXT_HARNESS_VERSION = "1"
#: test-time trigger positions are drawn with this seed, so every run seed is scored on the same inputs
EVAL_SEED = 12345
#: the paper's maximum lengths (docs/methods.md, text protocol); other values are noted next to the numbers
PAPER_MAX_LENGTH = {"imdb": 512}
#: the training splits ONION's offline n-gram LM is fitted on (those present under the data root)
NGRAM_CORPORA = ("sst2", "imdb", "agnews", "twitter")
NGRAM_VERSION = "1"


@DOMAINS.register("text")
class TextDomain(Domain):
    """Text data, transformer victims, word/sentence triggers."""

    recipe_type = TextRecipe
    unit = "sentences"

    def __init__(self, grid: Grid, data_root: Path, cache: ArtifactCache, device: str) -> None:
        super().__init__(grid, data_root, cache, device)
        self._memo: dict[str, Any] = {}
        for attack in grid.attacks:  # an unavailable attack (Syntactic without paraphrases) fails here
            self.attack(attack, grid.seeds[0])

    @classmethod
    def check_config(cls, cfg: GridConfig) -> None:
        if cfg.dataset.defense_in_training:
            raise ConfigError("dataset.defense_in_training is an image-only ablation")

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
        model = self.grid.model(self.data.num_classes, **overrides)
        self._memo["model_note"] = model.note
        return model.to(self.device)

    def load_model(self, tensors: dict[str, torch.Tensor]) -> nn.Module:
        model = self.new_model(pretrained=False)
        model.load_state_dict(tensors)
        return model.eval()

    def attack_context(self, attack: TextAttack, seed: int) -> TextAttackContext:
        train_texts, train_labels = self._texts("train", self.split(seed)[1])
        ds, model = self.grid.dataset, self.grid.config.model
        base = {"dataset": self.data.digest, "train_subset": ds.train_subset, "defense_size": ds.defense_size,
                "seed": seed, "model": {"name": model.name, "params": model.params},
                "version": TEXT_HARNESS_VERSION}
        return TextAttackContext(self.data.name, self.data_root, self.data.num_classes, self.device,
                                 self.recipe, self.new_model, self.part_cache("text_part", base), train_texts,
                                 train_labels, list(self.data.dev.texts), self.data.dev.labels)

    def method_context(self, seed: int, monitor: Monitor | None = None) -> TextMethodContext:
        ctx = TextMethodContext(self.defense_data(seed), seed, self.device, model_factory=self.new_model,
                                offline_lm=self.offline_lm, memo=self._memo.setdefault("method_memo", {}))
        if monitor is not None:
            ctx.monitor = monitor
        return ctx

    def offline_lm(self) -> KneserNeyTrigram:
        """ONION's offline stand-in for GPT-2: a Kneser–Ney trigram fitted once on the training splits of
        the bundled corpora under the data root (those present; never a test split), cached as an artifact."""
        if "offline_lm" not in self._memo:
            files = [f for f in (self.data_root / n / "train.tsv" for n in NGRAM_CORPORA) if f.is_file()]
            if not files:
                raise DataError(f"onion lm=ngram: no training corpus under {self.data_root} "
                                f"({', '.join(NGRAM_CORPORA)})")
            params = {"version": NGRAM_VERSION, "discount": 0.75,
                      "corpora": {f.parent.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}}
            tensors = self.part_cache("text_part", {"kind": "offline_lm"})("onion_ngram_lm", params, lambda: KneserNeyTrigram.fit(
                [t for f in files for t in read_tsv(f).texts]).to_tensors())
            lm = KneserNeyTrigram.from_tensors(tensors)
            lm.name = f"kneser-ney-trigram[{'+'.join(f.parent.name for f in files)}]"
            self._memo["offline_lm"] = lm
        return self._memo["offline_lm"]

    def train_poisoned(self, attack: ResolvedMethod, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        """Poison the victim-training split and train with the attack's procedure."""
        instance = self.attack(attack, seed)
        train_idx = self.split(seed)[1]
        texts, labels = self._texts("train", train_idx)
        poisoned = instance.poison_train(texts, labels, seed, rows=train_idx)
        model = instance.train(self.new_model(seed), poisoned, self.attack_context(instance, seed), seed)
        return model, {"poison_count": int(len(poisoned.poison_indices)), "train_size": int(len(train_idx)),
                       "attack_train_size": len(poisoned.texts), "attack_info": poisoned.info}

    def model_key_extras(self, attack: ResolvedMethod) -> dict[str, Any]:
        files = attack.method.trigger_files(self.data_root, self.data.name)
        return {"text": {"version": TEXT_HARNESS_VERSION, "trigger_files": {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "missing" for f in files}}}

    # ----------------------------------------------------------------- evaluation (harness only)
    def poison_test(self, attack: TextAttack, idx: np.ndarray, full: bool) -> tuple:
        texts, labels = self._texts("test", idx)
        poisoned = attack.poison_test(texts, labels, EVAL_SEED, rows=idx)
        # false triggers (SOS, LWP) are scored on the full subset only, not along exposure traces
        negatives = attack.negative_test(texts, labels, EVAL_SEED) if full and attack.has_negatives else None
        return (texts, labels), poisoned, negatives

    def evaluate(self, model: nn.Module, attack: TextAttack, limit: int | None = None) -> dict[str, float]:
        """CACC (``ca``), CACC without the target class, ASR on triggered non-target samples (FTR if any)."""
        clean, poisoned, negatives = self.test_set(attack, limit)
        return text_metrics(model, clean, None if attack.is_clean else poisoned, attack.target, self.device,
                            negatives)

    def filter_inputs(self, attack: TextAttack, n: int) -> tuple[list[str], list[str]]:
        (texts, _), (ptexts, _), _ = self.test_set(attack)
        return texts[:n], ptexts[:n]

    def setting_notes(self, attack: TextAttack) -> list[str]:
        """The victim that produced the numbers, then every deviation from the paper's text setting."""
        notes = [f"victim {self._memo.get('model_note') or self.grid.model.name}"]
        epochs = self.recipe.epochs
        if epochs is not None:  # the same words in every record of the recipe, then this attack's paper value
            notes.append(f"recipe '{self.recipe.name}' trains every attack {epochs} epoch{'s' * (epochs != 1)} "
                         f"(the paper: {attack.name} {attack.paper_epochs})")
        reference = asdict(TextRecipe())
        changed = {k: v for k, v in asdict(self.recipe).items() if k not in ("name", "epochs") and v != reference[k]}
        if changed:
            notes.append(f"recipe '{self.recipe.name}': " + ", ".join(f"{k}={v} (reference {reference[k]})"
                                                                       for k, v in changed.items()))
        max_length = self.grid.config.model.params.get("max_length", 128)
        paper_length = PAPER_MAX_LENGTH.get(self.data.name, 128)
        if max_length != paper_length:
            notes.append(f"max length {max_length} tokens instead of {paper_length}")
        return notes + self.subset_and_attack_notes(attack)
