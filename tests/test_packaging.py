"""The wheel: one top-level import name, ``ebyd_bench``, over the repository's folders.

The wheel is built offline from a copy of the sources with the setuptools already installed (the
``[test]`` extra pins a recent one) and installed without dependencies into a fresh virtual
environment that sees this interpreter's packages (torch, ...) only through its system site.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _sources(dest: Path) -> Path:
    """The files a build reads, copied so that building leaves nothing in the checkout."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"ebyd_bench", *config["package-dir"].values()}
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "measured")
    for folder in folders:
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, set[str]]:
    """(the venv, the names its site-packages gained by installing the wheel)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src, wheels, env = _sources(tmp / "src"), tmp / "wheels", tmp / "venv"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    proc = subprocess.run([*pip, "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    python = env / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    before = set(os.listdir(site))
    wheel = next(wheels.glob("ebyd_bench-*.whl"))
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env, set(os.listdir(site)) - before


def test_the_wheel_adds_exactly_one_top_level_name(installed):
    _, added = installed
    added = {n for n in added if n != "__pycache__"}
    assert {n for n in added if not n.endswith(".dist-info")} == {"ebyd_bench"}
    assert [n for n in added if n.endswith(".dist-info")] == ["ebyd_bench-0.1.0.dist-info"]


def test_the_wheel_holds_every_package_the_report_templates_and_a_current_catalog(installed):
    env, _ = installed
    script = ("import ebyd_bench, ebyd_bench.benchmark.grid.runner, ebyd_bench.reports.leaderboard, pathlib;"
              "from ebyd_bench.benchmark.catalog import catalog_names;"
              "assert 'badnets' in catalog_names('attacks');"  # None if catalog.json is missing or stale
              "print(ebyd_bench.__file__);"
              "print(len(list((pathlib.Path(ebyd_bench.reports.__file__).parent / 'templates').glob('*.j2'))))")
    out = subprocess.run([env / "bin" / "python", "-c", script], capture_output=True, text=True, cwd=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    location, templates = out.stdout.split()
    assert location.startswith(str(env)) and int(templates) >= 4


@pytest.mark.parametrize("command", [["bin/ebyd-bench"], ["bin/python", "-m", "ebyd_bench"]])
def test_console_script_and_module_entry_point(installed, command):
    env, _ = installed
    out = subprocess.run([env / command[0], *command[1:], "ls", "models"], capture_output=True, text=True, cwd=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resnet18_narrow" in out.stdout and "minilm-l6" in out.stdout
