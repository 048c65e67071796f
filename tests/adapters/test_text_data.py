"""Text datasets: TSV loading and digest, the Hub fallback's error, and D_d exclusion in text grids."""

import sys
from pathlib import Path

import numpy as np
import pytest

from ebyd_bench.adapters.text_data import TEXT_DATASETS, load_text_dataset, read_tsv
from ebyd_bench.benchmark.errors import DataError
from ebyd_bench.benchmark.registries import DATASETS

def write_split(folder: Path, rows: list[tuple[str, int]], name: str = "train") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")


def test_bundled_sst2_sizes_and_registration(text_root):
    ds = DATASETS.get("sst2")(text_root)
    assert (len(ds.train), len(ds.dev), len(ds.test)) == (6920, 872, 1821)
    assert ds.num_classes == 2 and ds.domain == "text" and ds.source.startswith("tsv:")
    assert ds.train.texts[1] == "apparently reassembled from the cutting-room floor of any given daytime soap ."
    assert ds.train.labels[:2].tolist() == [1, 0]
    assert set(TEXT_DATASETS) <= set(DATASETS.names())
    assert all(getattr(DATASETS.get(n), "domain", None) == "text" for n in TEXT_DATASETS)


def test_tsv_digest_tracks_texts_and_labels(tmp_path):
    rows = [("a good film", 1), ("a bad one", 0)]
    for split in ("train", "test"):
        write_split(tmp_path / "sst2", rows, split)
    first = load_text_dataset("sst2", tmp_path)
    assert first.train.texts == ("a good film", "a bad one") and len(first.dev) == 0
    assert load_text_dataset("sst2", tmp_path).digest == first.digest
    write_split(tmp_path / "sst2", [("a good film", 0), ("a bad one", 0)], "test")
    assert load_text_dataset("sst2", tmp_path).digest != first.digest


def test_tsv_errors_are_clear(tmp_path):
    (tmp_path / "bad.tsv").write_text("text\tlabel\nx\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match="header"):
        read_tsv(tmp_path / "bad.tsv")
    write_split(tmp_path / "agnews", [("x", 7)])
    write_split(tmp_path / "agnews", [("x", 0)], "test")
    with pytest.raises(DataError, match="labels must be in 0..3"):
        load_text_dataset("agnews", tmp_path)
    with pytest.raises(DataError, match="dataset.download"):
        load_text_dataset("imdb", tmp_path)


def test_hub_fallback_without_datasets_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # "import datasets" now raises ImportError
    with pytest.raises(DataError, match="pip install datasets"):
        load_text_dataset("sst2", tmp_path, download=True)
    with pytest.raises(DataError, match="no Hugging Face Hub source"):
        load_text_dataset("twitter", tmp_path, download=True)


def test_defense_data_is_excluded_from_victim_training(text_root, tmp_path):
    from ebyd_bench.benchmark.grid.config import validate_config
    from ebyd_bench.benchmark.grid.runner import RunOptions, build_domain

    cfg = validate_config({
        "name": "split", "dataset": {"name": "sst2", "train_subset": 300, "defense_size": 500},
        "model": {"name": "minilm-l6"}, "attacks": ["badnet_rw"], "defenses": ["none"]})
    run = build_domain(cfg, RunOptions(tmp_path / "out", tmp_path / "cache", text_root))
    dd, train = run.split(0)
    assert len(dd) == 500 and len(train) == 300 and not set(dd) & set(train)
    data = run.defense_data(0)
    assert data.texts == [run.data.train.texts[i] for i in dd]
    assert np.array_equal(data.labels, run.data.train.labels[dd])
    assert not np.array_equal(run.split(1)[0], dd)  # drawn from the seed
