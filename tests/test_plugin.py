"""Plug-in defenses: the example package installs, registers through its entry point, runs in a grid
and shows up in the leaderboard next to EBYD (CUL+RP).

The package is installed with ``pip install --no-deps --no-build-isolation --target`` (offline:
the setuptools already installed builds it) from a copy, so the build leaves nothing in the repo.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ebyd-plugin-example"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder holding the installed example plug-in (to put on PYTHONPATH)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail("building the example plug-in offline needs setuptools>=68 here (pip install 'setuptools>=68')")
    tmp = tmp_path_factory.mktemp("plugin")
    src, target = tmp / "src", tmp / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    proc = subprocess.run([*pip, "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _cli(args: list[str], plugin_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``ebyd-bench`` in a subprocess that sees the plug-in (single-threaded, as CI does)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ebyd_bench", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)


def test_plugin_listed_with_its_source(plugin_path: Path, capsys) -> None:
    proc = _cli(["ls", "defenses"], plugin_path)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("example_ft"))
    assert "[removal]" in line and "Plain fine-tuning" in line and line.endswith("(plugin:ebyd-plugin-example)")
    # absent without the plug-in: this process never had plugin_path on its path
    from ebyd_bench.cli import main

    assert main(["ls", "defenses"]) == 0
    listed = capsys.readouterr().out
    assert "none" in listed and "example_ft" not in listed
    detail = _cli(["ls", "defenses", "example_ft"], plugin_path).stdout
    assert detail.startswith("example_ft  (plugin:ebyd-plugin-example)  [removal]")
    assert any(line.split()[:4] == ["epochs", "int", "≥", "1"] for line in detail.splitlines())


@pytest.mark.e2e
def test_plugin_runs_in_a_grid_and_reaches_the_leaderboard(plugin_path: Path, tmp_path: Path, data_root: Path,
                                                           session_cache: Path) -> None:
    cfg = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    cfg["name"] = "tiny-plugin"
    cfg["defenses"] = [*cfg["defenses"], {"name": "example_ft", "epochs": 1}]
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    proc = _cli(["run", str(tmp_path / "grid.yaml"), "--out", str(out), "--cache-dir", str(session_cache),
                 "--data-root", str(data_root)], plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 cells run" in proc.stdout

    html = (out / "leaderboard.html").read_text(encoding="utf-8")
    matrix = re.search(r'<table class="lb matrix">.*?</table>', html, re.S).group(0)
    groups = re.findall(r'<th class="group[^"]*" colspan="2">([^<]+)</th>', matrix)
    assert "CUL+RP" in groups and any("EXAMPLE_FT" in g for g in groups), groups
    ranking = re.search(r'<table class="lb ranking">.*?</table>', html, re.S).group(0)
    assert "EXAMPLE_FT" in ranking and "CUL+RP" in ranking
    assert "ft_dd_acc" in html  # the plug-in's own outputs are rendered generically
