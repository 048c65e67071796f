"""A Hugging Face causal LM (GPT-2 by default) as ONION's perplexity scorer (docs/methods.md §7.4-2).

[D] No truncation below the LM's context (OB truncates at 96 tokens); padded positions are masked
out of the loss (OB lets them in); each text is prefixed with the BOS token (GPT-2: <|endoftext|>)
so that every word — also a single remaining word — is scored.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ebyd_bench.benchmark.errors import BenchmarkError


class HFCausalLM:
    stand_in = False

    def __init__(self, name_or_path: str, device: str = "cpu", batch_size: int = 32) -> None:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModelForCausalLM.from_pretrained(name_or_path).to(device).eval()
        except (OSError, ImportError) as exc:
            raise BenchmarkError(f"ONION cannot load the causal LM '{name_or_path}' ({exc}); offline, use "
                                 f"lm: ngram (the documented n-gram stand-in, labelled as such)") from exc
        self.name, self.device, self.batch_size = name_or_path, device, batch_size
        cfg = self.model.config
        self.context = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 1024)
        bos = self.tokenizer.bos_token_id
        self.bos = bos if bos is not None else self.tokenizer.eos_token_id

    @torch.no_grad()
    def perplexities(self, texts: Sequence[str]) -> np.ndarray:
        ids = [([self.bos] + self.tokenizer(t, add_special_tokens=False)["input_ids"])[:self.context] for t in texts]
        out = np.zeros(len(ids))
        order = np.argsort([len(i) for i in ids], kind="stable")
        for start in range(0, len(ids), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(ids[i]) for i in idx)
            x = torch.zeros(len(idx), width, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.bool)
            for row, i in enumerate(idx):
                x[row, :len(ids[i])] = torch.as_tensor(ids[i])
                mask[row, :len(ids[i])] = True
            x, mask = x.to(self.device), mask.to(self.device)
            logits = self.model(input_ids=x, attention_mask=mask.long()).logits[:, :-1].float()
            nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
            valid = mask[:, 1:]
            mean = (nll * valid).sum(1) / valid.sum(1).clamp(min=1)
            out[idx] = torch.exp(mean).cpu().numpy()
        return out
