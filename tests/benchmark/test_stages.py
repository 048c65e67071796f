"""Stages are descriptions, not closures: a grid and a stage pickle, and another process that holds
the grid executes the stage into the shared cache (what a process pool or a Ray task does)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import shutil
from pathlib import Path

import pytest

from ebyd_bench.benchmark.grid.config import load_config
from ebyd_bench.benchmark.grid.runner import RunOptions, StageRunner, plan

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _execute_elsewhere(payload: bytes) -> str:
    """In a fresh interpreter: unpickle (grid, options, stage) and execute the stage."""
    grid, opts, stage = pickle.loads(payload)
    art = StageRunner(grid, opts)(stage, {})
    return art.key


@pytest.mark.e2e  # runs a grid
def test_a_stage_runs_in_another_process_and_its_artifact_is_shared(tmp_path, data_root, session_cache, cifar):
    cache = tmp_path / "cache"
    shutil.copytree(session_cache / "datasets", cache / "datasets")  # skip decoding the JPEGs again
    grid = load_config(TINY)
    opts = RunOptions(tmp_path / "out", cache, data_root)
    here = StageRunner(grid, opts)
    stages, _ = plan(grid, here.keys, set())
    train = next(s for s in stages if s.kind == "train")
    payload = pickle.dumps((grid, opts, train))
    assert pickle.loads(payload)[0] == grid and pickle.loads(payload)[2] == train
    with mp.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_execute_elsewhere, (payload,)) == train.key
    art = here(train, {})
    assert art.cached and art.key == train.key  # trained there, loaded here
