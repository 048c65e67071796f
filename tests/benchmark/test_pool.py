"""Concurrent stages (``--jobs``): the same records as one stage at a time, resume, Ctrl-C and SIGTERM.

On CPU a stage's numbers depend on its intra-op thread count; the tests run with one thread per
process (tests/conftest.py), so a --jobs 2 worker computes exactly what a --jobs 1 run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ebyd_bench.cli import main

pytestmark = pytest.mark.e2e

METRICS = ("ca", "ca_nt", "asr", "ca_before", "asr_before", "exposed_label", "exposed_ca", "exposed_asr", "bem")
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def metrics(out: Path) -> dict[str, tuple]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len({r["cell_key"] for r in records}) == len(records)  # no cell twice
    return {r["cell_key"]: tuple(r.get(m) for m in METRICS) + (json.dumps(r["defense_info"].get("rp_threshold")),)
            for r in records}


def run(out: Path, cache: Path, data_root: Path, *extra: str) -> int:
    return main(["run", str(TINY), "--out", str(out), "--cache-dir", str(cache), "--data-root", str(data_root),
                 *extra])


def test_two_jobs_give_the_records_of_one_and_resume(tiny_grid, seeded_cache, data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(out, seeded_cache, data_root, "--jobs", "2") == 0
    assert "4 cells run, 0 resumed, 2 poisoned models trained" in capsys.readouterr().out
    assert metrics(out) == metrics(tiny_grid)
    assert (out / "run.log").read_text().count("grid.runner: cell ") == 4  # the workers' lines reach run.log
    assert run(out, seeded_cache, data_root, "--jobs", "2") == 0  # resume: nothing left
    assert "0 cells run, 4 resumed, 0 poisoned models trained" in capsys.readouterr().out


HAS_PROC = Path("/proc/self/stat").exists()  # Linux: a session's processes can be listed


@pytest.mark.parametrize("how", ["ctrl-c", pytest.param("sigterm", marks=pytest.mark.skipif(
    not HAS_PROC, reason="needs Linux /proc to see that the workers stopped"))])
def test_an_interrupt_stops_every_worker_and_a_rerun_resumes_to_the_same_records(how, tiny_grid, seeded_cache,
                                                                                 data_root, tmp_path):
    """Ctrl-C signals the driver and its workers; SIGTERM (``kill PID``, ``timeout``, a scheduler) only the
    driver, which must stop its workers itself rather than leave them training as orphans."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ebyd_bench", "run", str(TINY), "--out", str(out), "--cache-dir",
               str(seeded_cache), "--data-root", str(data_root), "--jobs", "2"]
    # a terminal's Ctrl-C reaches a process whose SIGINT is at its default; a test run started in the
    # background of a script inherits SIGINT ignored (POSIX), and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EBYD_PROGRESS": "0"}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not (out / "run.log").exists() or "stage train" not in (out / "run.log").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the driver and its workers
    else:
        os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == {"ctrl-c": 130, "sigterm": 143}[how], err[-2000:]
    assert "run the same command again to resume" in err
    if HAS_PROC:
        left = _still_running(proc.pid)  # the session started with the driver: its workers too
        for pid in left:  # so that a failure here leaves no orphan training on
            os.kill(pid, signal.SIGKILL)
        assert left == []
    assert run(out, seeded_cache, data_root, "--jobs", "2") == 0
    assert metrics(out) == metrics(tiny_grid)


def _still_running(session: int, wait_s: float = 15.0) -> list[int]:
    """Processes of ``session`` (Linux /proc) that have not exited within ``wait_s`` (zombies count as gone)."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                state, _, _, sid = stat.read_text().rsplit(")", 1)[1].split()[:4]
            except OSError:  # exited while listed
                continue
            if int(sid) == session and state != "Z":
                alive.append(int(stat.parent.name))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_ray_executor_gives_the_records_of_the_local_one(tiny_grid, seeded_cache, data_root, tmp_path, capsys):
    pytest.importorskip("ray", reason="pip install 'ebyd-bench[ray]'")
    out = tmp_path / "out"
    assert run(out, seeded_cache, data_root, "--executor", "ray", "--jobs", "2") == 0  # a local Ray instance
    assert "4 cells run, 0 resumed, 2 poisoned models trained" in capsys.readouterr().out
    assert metrics(out) == metrics(tiny_grid)
