"""Helpers shared by several image attacks: clean-label index selection and trigger-file digests."""

from __future__ import annotations

import hashlib
from pathlib import Path
import numpy as np

from ebyd_bench.benchmark.params import LabelMode


def poison_indices(labels: np.ndarray, rate: float, target: int, label_mode: LabelMode,
                   clean_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices to poison.

    ``dirty``: ⌊rate·N⌋ drawn uniformly from all classes (the same draw as ``ImageAttack.poison_train``).
    ``clean``: ⌊clean_fraction·N_target⌋ drawn from the target class only (their labels are kept).
    """
    if label_mode == "dirty":
        n = int(np.floor(rate * len(labels)))
        return np.sort(rng.choice(len(labels), size=n, replace=False))
    own = np.flatnonzero(labels == target)
    n = int(np.floor(clean_fraction * len(own)))
    return np.sort(rng.choice(own, size=n, replace=False))


def file_digest(path: str | Path | None) -> str | None:
    """SHA-256 of a trigger file, so that the file's content (not only its path) enters cache keys."""
    if path is None:
        return None
    if not Path(path).is_file():
        return "missing"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_file(path: str, attack: str) -> Path:
    """``path`` as a Path, or a ValueError naming the attack when there is no such file."""
    if not Path(path).is_file():
        raise ValueError(f"attack '{attack}': trigger_file {path} does not exist")
    return Path(path)
