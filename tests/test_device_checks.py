"""scripts/device-checks.sh, the prepared GPU measurements, runs end to end at toy size on a CPU."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ebyd_bench.results import load_results

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device-checks.sh"


def _run(check: str, out: Path, tmp_path: Path, data_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHECK_SCALE": "tiny", "EBYD_DATA_ROOT": str(data_root),
           "EBYD_CACHE_DIR": str(tmp_path / "cache"), "EBYD_PROGRESS": "0"}
    return subprocess.run(["bash", str(SCRIPT), check, str(out)], cwd=SCRIPT.parents[1], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.e2e  # trains four toy victims
def test_the_baselines_check_runs_its_grid(tmp_path, data_root):
    done = _run("baselines", tmp_path / "out", tmp_path, data_root)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "out" / "baselines" / "log.txt").read_text()
    assert "ebyd-bench run configs/paper-cifar10.yaml" in log and "-> exit 0" in log
    records = load_results(tmp_path / "out" / "baselines" / "image")
    assert set(records["attack"]) == {"badnets", "blend", "trojan", "wanet"}


def test_an_unknown_check_is_one_error(tmp_path, data_root):
    done = _run("everything", tmp_path / "out", tmp_path, data_root)
    assert done.returncode == 2 and "unknown check 'everything'" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing written
