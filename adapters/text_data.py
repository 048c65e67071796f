"""Text classification datasets (docs/methods.md §2.2, §1.10): SST-2, IMDB, AG's News and Twitter.

Read from the data root's TSV layout ``<root>/<name>/{train,dev,test}.tsv`` (header
``sentence<TAB>label``; the bundled offline copies), or, when the folder is absent and
``download=True``, from the Hugging Face Hub through the optional ``datasets`` package. A text
dataset carries ``domain = "text"`` (on the dataset and on its registered loader) so the harness
can pick the text branch; its digest covers every text and label and enters every cache key.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebyd_bench.benchmark.errors import DataError
from ebyd_bench.benchmark.registries import DATASETS

TSV_HEADER = ("sentence", "label")


@dataclass(frozen=True)
class TextSplit:
    """A split as whitespace-tokenisable strings and int64 labels; row i is line i+2 of the TSV."""

    texts: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class HubSource:
    """Where a dataset lives on the Hugging Face Hub, for users with network access."""

    path: str
    text: str = "text"
    label: str = "label"
    dev: str | None = None  # split name of a dev set, if the hub copy has one


@dataclass(frozen=True)
class TextDatasetInfo:
    title: str
    classes: tuple[str, ...]
    hub: HubSource | None
    note: str = ""


TEXT_DATASETS: dict[str, TextDatasetInfo] = {
    "sst2": TextDatasetInfo("SST-2 sentences (HiddenKiller split)", ("negative", "positive"),
                            HubSource("SetFit/sst2", dev="validation")),
    "imdb": TextDatasetInfo("IMDB movie reviews", ("negative", "positive"), HubSource("stanfordnlp/imdb")),
    "agnews": TextDatasetInfo("AG's News topics", ("World", "Sports", "Business", "Sci/Tech"),
                              HubSource("fancyzhx/ag_news"),
                              "bundled AG's News train split is an 11,106-row subset of the official 120k"),
    "twitter": TextDatasetInfo("Founta et al. abusive tweets (OpenBackdoor 'twitter')", ("normal", "abusive"), None,
                               "bundled Twitter split is a 70/10/20 re-split of the published test file"),
}


@dataclass(frozen=True)
class TextDataset:
    name: str
    train: TextSplit
    dev: TextSplit
    test: TextSplit
    classes: tuple[str, ...]
    source: str  # "tsv:<path>" or "hub:<repo>"
    digest: str  # sha256 over every text and label of the three splits
    note: str = ""
    domain: str = "text"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_tsv(path: Path) -> TextSplit:
    """One ``sentence<TAB>label`` row per line after the header; any other shape is an error."""
    if not path.is_file():
        raise DataError(f"missing text split {path}")
    lines = path.read_text(encoding="utf-8").split("\n")
    if tuple(lines[0].rstrip("\r").split("\t")) != TSV_HEADER:
        raise DataError(f"{path}: expected the header 'sentence<TAB>label', got {lines[0][:60]!r}")
    texts, labels = [], []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        text, sep, label = line.rstrip("\r").rpartition("\t")
        if not sep or not label.strip().lstrip("-").isdigit():
            raise DataError(f"{path}:{n}: expected 'sentence<TAB>integer label'")
        texts.append(text)
        labels.append(int(label))
    return TextSplit(tuple(texts), np.asarray(labels, dtype=np.int64))


def text_digest(*splits: TextSplit) -> str:
    h = hashlib.sha256()
    for split in splits:
        h.update(f"{len(split)}\n".encode())
        for text in split.texts:
            h.update(text.encode("utf-8") + b"\x00")
        h.update(np.ascontiguousarray(split.labels).tobytes())
    return h.hexdigest()


def load_text_dataset(name: str, data_root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                      download: bool = False) -> TextDataset:
    """``<root>/<name>/*.tsv`` if present, else the Hub copy when ``download`` (cache_dir is the hub cache)."""
    info = TEXT_DATASETS[name]
    folder = Path(data_root).expanduser() / name
    if (folder / "train.tsv").is_file():
        train, test = read_tsv(folder / "train.tsv"), read_tsv(folder / "test.tsv")
        dev = read_tsv(folder / "dev.tsv") if (folder / "dev.tsv").is_file() else TextSplit((), np.zeros(0, np.int64))
        source = f"tsv:{folder.resolve()}"
    elif download:
        train, dev, test = _from_hub(name, info, cache_dir)
        source = f"hub:{info.hub.path}"  # type: ignore[union-attr]
    else:
        raise DataError(f"{info.title} not found: expected {folder}/{{train,dev,test}}.tsv with the header "
                        f"'sentence<TAB>label' (set --data-root / EBYD_DATA_ROOT, or dataset.download: true "
                        f"to fetch it with the 'datasets' package)")
    _check_labels(name, info, train, dev, test)
    return TextDataset(name, train, dev, test, info.classes, source, text_digest(train, dev, test), info.note)


def _check_labels(name: str, info: TextDatasetInfo, *splits: TextSplit) -> None:
    for split in splits:
        if len(split) and (split.labels.min() < 0 or split.labels.max() >= len(info.classes)):
            raise DataError(f"{name}: labels must be in 0..{len(info.classes) - 1}")


def _from_hub(name: str, info: TextDatasetInfo, cache_dir: str | os.PathLike | None) -> tuple[TextSplit, ...]:
    if info.hub is None:
        raise DataError(f"{name} has no Hugging Face Hub source: place its TSVs under <data-root>/{name}/")
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name} is not under the data root and the optional 'datasets' package is not "
                        f"installed: pip install datasets (network access needed), or provide the TSVs") from None
    hub = info.hub
    try:
        ds = datasets.load_dataset(hub.path, cache_dir=None if cache_dir is None else str(Path(cache_dir) / "hub"))
    except Exception as exc:  # network, authentication, renamed repository: one clear message
        raise DataError(f"could not load {hub.path} from the Hugging Face Hub: {exc}") from exc

    def split(part: str | None) -> TextSplit:
        if part is None:
            return TextSplit((), np.zeros(0, np.int64))
        rows = ds[part]
        return TextSplit(tuple(" ".join(str(t).split()) for t in rows[hub.text]),
                         np.asarray(rows[hub.label], dtype=np.int64))

    return split("train"), split(hub.dev), split("test")


def _register(name: str) -> None:
    def load(data_root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
             download: bool = False) -> TextDataset:
        return load_text_dataset(name, data_root, cache_dir, download)

    load.__doc__ = f"{TEXT_DATASETS[name].title} (text; TSV under the data root, or the Hub)."
    load.domain = "text"  # type: ignore[attr-defined]
    load.num_classes = len(TEXT_DATASETS[name].classes)  # type: ignore[attr-defined]  # checked at config load
    DATASETS.register(name)(load)


for _name in TEXT_DATASETS:
    _register(_name)
