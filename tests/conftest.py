"""Shared fixtures: the real CIFAR-10 data root and a session-wide cache of the decoded arrays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ebyd_bench/cli.py

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$EBYD_DATA_ROOT`` (CI sets it; a missing folder then fails), else ../shared/data if present."""
    env = os.environ.get("EBYD_DATA_ROOT")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not (root / "cifar10").is_dir():
        if env:
            pytest.fail(f"EBYD_DATA_ROOT={env} has no cifar10/ folder")
        pytest.skip("no CIFAR-10 data root (set EBYD_DATA_ROOT)")
    return root


@pytest.fixture(scope="session")
def text_root() -> Path:
    """The data root of the text TSVs (``sst2/``): ``$EBYD_DATA_ROOT``, else ../shared/data."""
    root = Path(os.environ.get("EBYD_DATA_ROOT", REPO.parent / "shared" / "data"))
    if not (root / "sst2" / "train.tsv").is_file():
        pytest.skip("no text data root with sst2/ (set EBYD_DATA_ROOT)")
    return root


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def cifar(data_root, session_cache):
    from ebyd_bench.adapters.torchvision_data import load_cifar10

    return load_cifar10(data_root, session_cache)


@pytest.fixture
def seeded_cache(cifar, session_cache, tmp_path) -> Path:
    """A fresh cache folder that already holds the decoded CIFAR-10 arrays (skips JPEG decoding)."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(session_cache / "datasets", cache / "datasets")
    return cache


@pytest.fixture
def tiny_config_path() -> Path:
    return REPO / "tests" / "configs" / "tiny.yaml"
