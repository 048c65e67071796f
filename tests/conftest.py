"""Shared fixtures and helpers: the real CIFAR-10 data root, a session-wide cache of the decoded arrays,
the tiny grid run once per session, and the sandbox that runs defenses under an audit-hook tripwire.

The test folders mirror the package layout (``tests/attacks/``, ``tests/defenses/``, ...); they have no
``__init__.py``, so a test file's basename must be unique across them (pytest reports a clash)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ebyd_bench/cli.py
# One intra-op thread per test process (set before torch is imported; OMP_NUM_THREADS=N overrides it).
# The tiny models here gain little from a second thread, and on a 2-core machine where anything else
# runs, a 2-thread OpenMP team waits for its descheduled partner at every op: the 30-epoch fixture of
# tests/exposures/ took 20-38 s instead of 6-10 s. The sandbox and plug-in child processes inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


@pytest.fixture
def run_yaml(tmp_path, data_root, seeded_cache):
    """``run_yaml(text)``: write a grid YAML, run it through the CLI (exit 0 required) and return its
    records (one dict per line of ``OUT/results.jsonl``) and the output folder."""
    import json

    from ebyd_bench.cli import main

    def run(text: str) -> tuple[list[dict], Path]:
        config, out = tmp_path / "grid.yaml", tmp_path / "out"
        config.write_text(text)
        assert main(["run", str(config), "--out", str(out), "--cache-dir", str(seeded_cache),
                     "--data-root", str(data_root)]) == 0
        return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()], out

    return run


@pytest.fixture
def tiny_config_path() -> Path:
    return TINY_CONFIG


@pytest.fixture(scope="session")
def tiny_grid(tmp_path_factory, data_root, session_cache) -> Path:
    """The output folder of ``tests/configs/tiny.yaml`` run once per session through the CLI (poisoned
    models and exposures land in the session cache). Read it only: a test that writes into a grid's
    folder takes ``tiny_grid_copy``."""
    from ebyd_bench.cli import main

    out = tmp_path_factory.mktemp("tiny-grid") / "out"
    assert main(["run", str(TINY_CONFIG), "--out", str(out), "--cache-dir", str(session_cache),
                 "--data-root", str(data_root)]) == 0
    return out


@pytest.fixture
def tiny_grid_copy(tiny_grid, tmp_path) -> Path:
    """A private copy of the session's tiny grid output, free to be written to."""
    return Path(shutil.copytree(tiny_grid, tmp_path / "tiny-grid"))


# ------------------------------------------------------------------ the defense sandbox
#: Modules of the data and attack side: the only code paths to the test split, the triggers and the
#: poisoned data. A sandboxed defense may neither import them nor open their source files.
FORBIDDEN_MODULES = ("ebyd_bench.adapters", "ebyd_bench.attacks_registry", "ebyd_bench.benchmark.grid.runner",
                     "ebyd_bench.cli", "ebyd_bench.results")

#: The prelude of every sandbox child: reads the forbidden roots (argv[1]) and the tiny settings
#: (argv[2]), and defines the tripwire; ``arm()`` installs it, ``armed[0]`` switches it on and off.
TRIPWIRE = r'''
import importlib, inspect, json, os, sys

FORBIDDEN_ROOTS = [os.path.realpath(p) for p in json.loads(sys.argv[1])]
TINY = json.loads(sys.argv[2])
FORBIDDEN_MODULES = tuple(json.loads(sys.argv[3]))
armed, violations = [False], []


def forbidden_module(name):
    return any(name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES)


def flag(what):
    violations.append(what)
    raise PermissionError(f"tripwire: a defense tried to {what}")


def hook(event, args):
    if armed[0] and event in ("open", "os.listdir", "os.scandir", "glob.glob") and args \
            and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]) or ".")
        if any(path == r or path.startswith(r + os.sep) for r in FORBIDDEN_ROOTS):
            flag(f"{event} {path}")


class ImportBlocker:
    """First meta-path finder: any import (statement or importlib) of a forbidden module while armed."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if armed[0] and forbidden_module(name):
            flag(f"import {name}")
        return None


def arm():
    """Install the audit hook and the import blocker (they act only while ``armed[0]``)."""
    sys.addaudithook(hook)
    sys.meta_path.insert(0, ImportBlocker)


def report(payload):
    print("REPORT" + json.dumps(payload))
'''


def _source_of(module: str) -> Path | None:
    """The source file (or package folder) of ``module``, without importing it; None if it is gone."""
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)


def forbidden_roots() -> list[str]:
    """What a defense may not open or list: the data roots, the artifact caches (decoded datasets and
    poisoned models live there) and the source of the data and attack side."""
    from ebyd_bench.benchmark.io import default_cache_dir

    roots = [REPO.parent / "shared" / "data", default_cache_dir(), REPO / "adapters", REPO / "attacks_registry",
             REPO / "results"]
    roots += [src for src in map(_source_of, FORBIDDEN_MODULES) if src is not None]
    roots += [Path(os.environ[v]) for v in ("EBYD_DATA_ROOT", "EBYD_CACHE_DIR") if os.environ.get(v)]
    return [str(r) for r in roots]


def run_sandboxed(child: str, tiny: dict, timeout: int) -> dict:
    """Run ``TRIPWIRE + child`` in a fresh single-threaded interpreter that holds no test data, and
    return the payload the child passed to ``report``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [json.dumps(forbidden_roots()), json.dumps(tiny), json.dumps(FORBIDDEN_MODULES)]
    proc = subprocess.run([sys.executable, "-c", TRIPWIRE + child, *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT")), None)
    assert line is not None and proc.returncode == 0, f"sandbox failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(line[len("REPORT"):])


@pytest.fixture(scope="session")
def sandbox():
    """``run_sandboxed``: the tripwire sandbox the image and text data-access tests share."""
    return run_sandboxed
