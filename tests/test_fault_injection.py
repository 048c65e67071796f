"""Fault injection (issue 21, item 3): SIGKILL the tiny grid (``tests/configs/tiny.yaml``, run as
``python -m ebyd_bench run`` in a child process) at seeded random moments of training, exposure, a
defense and the report, and rerun it; damage the cache; start two runners on one cache at once. Each
rerun must finish with a store free of duplicate or torn lines and records equal to the uninterrupted
run of the session (``tiny_grid``).

The tests share the session's trained models: each case starts from a copy of the session cache with
only the artifacts of the stages at and after its moment removed, so only those are recomputed. Every
case adds a row to a JSON summary (``$EBYD_FAULT_SUMMARY``, default ``<session tmp>/fault_injection.json``)
that ``python tests/test_fault_injection.py SUMMARY`` renders as the table of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.yaml"
#: record fields that legitimately differ between two runs of the same cell
VOLATILE = {"timings", "provenance", "train_cached", "hardware"}
#: SIGKILL moments of the tiny grid (stages run in this order with --jobs 1: train badnets, expose
#: badnets, its two cells, then the same for blend): (name, run.log line to wait for, seconds after it,
#: what the cache copy lacks, tear the store's last line after the kill)
MOMENTS = [
    ("start-up (imports, data loading)", None, (0.3, 1.5), (), False),
    ("training badnets", "stage train badnets", (0.1, 0.9), ("badnets",), False),
    ("training blend", "stage train blend", (0.1, 0.8), ("blend",), False),
    ("exposure of badnets (CUL)", "stage expose badnets", (0.1, 0.8), ("badnets-exposure",), False),
    ("exposure of blend (CUL)", "stage expose blend", (0.1, 0.7), ("blend-exposure",), False),
    ("defense RP on badnets", "stage badnets × cul × rp", (0.2, 2.0), (), False),
    ("defense RP on blend, then a torn last line", "stage blend × cul × rp", (0.2, 2.0), (), True),
    ("between two cells", "cell badnets × cul × none:", (0.0, 0.3), (), False),
    ("the report (leaderboard)", "cell blend × cul × rp:", (0.05, 1.0), (), False),
    ("the report, later", "cell blend × cul × rp:", (1.0, 2.0), (), False),
]
#: the same with --jobs 2 (the driver logs a stage when it finishes; the whole process group is killed)
POOL_MOMENTS = [
    ("--jobs 2: workers starting", "cells to run", (0.5, 3.0), ("blend",), False),
    ("--jobs 2: after the first training", "stage train badnets", (0.0, 1.0), ("badnets",), False),
    ("--jobs 2: defenses running", "stage badnets × cul × none", (0.0, 1.0), (), False),
]

_SUMMARY: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def _write_summary(tmp_path_factory):
    yield
    path = Path(os.environ.get("EBYD_FAULT_SUMMARY") or tmp_path_factory.getbasetemp() / "fault_injection.json")
    path.write_text(json.dumps({"cases": _SUMMARY}, indent=1) + "\n")
    print(f"\nfault-injection summary: {path}")


def _note(suite: str, case: str, held: bool, **details) -> None:
    _SUMMARY.append({"suite": suite, "case": case, "held": bool(held), **details})


# ------------------------------------------------------------------ helpers
def _env(cache: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EBYD_PROGRESS": "0"}
    if cache is not None:
        env["EBYD_CACHE_DIR"] = str(cache)
    return env


def _command(out: Path, cache: Path, data_root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ebyd_bench", "run", str(TINY), "--out", str(out), "--cache-dir", str(cache),
            "--data-root", str(data_root), "--device", "cpu", *extra]


def _run(out: Path, cache: Path, data_root: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_command(out, cache, data_root, *extra), capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=REPO)


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ebyd_bench", *args], capture_output=True, text=True,
                          timeout=120, env=_env(cache), cwd=REPO)


def _log(out: Path) -> str:
    try:
        return (out / "run.log").read_text(errors="replace")
    except OSError:
        return ""


def _reference(tiny_grid: Path) -> dict[str, dict]:
    return {r["cell_key"]: r for r in map(json.loads, (tiny_grid / "results.jsonl").read_text().splitlines())}


def _store_problems(out: Path, reference: dict[str, dict]) -> list[str]:
    """What is wrong with ``out/results.jsonl`` against the reference run (empty when it matches)."""
    text = (out / "results.jsonl").read_text()
    problems = [] if text.endswith("\n") else ["no trailing newline"]
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            problems.append(f"line {n} is not JSON (torn)")
    keys = [r["cell_key"] for r in records]
    if len(keys) != len(set(keys)):
        problems.append("a duplicate cell")
    if set(keys) != set(reference):
        problems.append(f"cells {sorted(k[:8] for k in set(keys) ^ set(reference))} differ from the reference")
    for r in records:
        ref = reference.get(r["cell_key"])
        if ref is not None:
            changed = sorted(k for k in set(r) | set(ref) if k not in VOLATILE and r.get(k) != ref.get(k))
            if changed:
                problems.append(f"{r['label']}: {changed} differ from the uninterrupted run")
    return problems


def _keys(reference: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """Which cache entries each droppable name stands for: (kind, key)."""
    out: dict[str, set] = {}
    for r in reference.values():
        out.setdefault(r["attack"], set()).update({("models", r["cache_key"]), ("exposures", r["exposure_key"])})
        out.setdefault(f"{r['attack']}-exposure", set()).add(("exposures", r["exposure_key"]))
    return out


def _cache_copy(session_cache: Path, dst: Path, drop: tuple[str, ...], reference: dict[str, dict]) -> Path:
    """The session cache (decoded dataset, the tiny grid's models and exposures) without ``drop``'s entries."""
    shutil.copytree(session_cache, dst)
    groups = _keys(reference)
    for name in drop:
        for kind, key in groups[name]:
            for path in (dst / kind / key[:2]).glob(f"{key}.*"):
                path.unlink()
    return dst


def _kill_at(proc: subprocess.Popen, out: Path, marker: str | None, delay: float) -> dict:
    """SIGKILL ``proc``'s process group ``delay`` seconds after ``marker`` appears in run.log (after its
    start when None); what it was doing then."""
    t0 = time.monotonic()
    while marker is not None and marker not in _log(out):
        if proc.poll() is not None or time.monotonic() - t0 > 240:
            return {"killed": False, "why": f"'{marker}' never appeared (rc {proc.poll()})"}
        time.sleep(0.02)
    time.sleep(delay)
    alive = proc.poll() is None
    last = (_log(out).strip().splitlines() or ["(no log yet)"])[-1]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return {"killed": alive, "at_seconds": round(time.monotonic() - t0, 2),
            "last_log_line": last.split(": ", 1)[-1][:80]}


def _tear_last_line(store: Path) -> bool:
    lines = store.read_text().splitlines() if store.exists() else []
    if not lines:
        return False
    store.write_text("".join(x + "\n" for x in lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    return True


def _kill_and_resume(index: int, moment: tuple, tmp_path: Path, tiny_grid: Path, session_cache: Path,
                     data_root: Path, suite: str, extra: tuple[str, ...] = ()) -> None:
    name, marker, (lo, hi), drop, tear = moment
    reference = _reference(tiny_grid)
    delay = random.Random(1000 + index).uniform(lo, hi)  # a seeded random moment in the window
    cache = _cache_copy(session_cache, tmp_path / "cache", drop, reference)
    out = tmp_path / "out"
    with open(tmp_path / "killed.err", "w") as err:
        proc = subprocess.Popen(_command(out, cache, data_root, *extra), stdout=subprocess.DEVNULL, stderr=err,
                                env=_env(), cwd=REPO, start_new_session=True)
        try:
            kill = _kill_at(proc, out, marker, delay)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    torn = tear and _tear_last_line(out / "results.jsonl")
    rerun = _run(out, cache, data_root, *extra)
    problems = [] if rerun.returncode == 0 else [f"rerun exited {rerun.returncode}: {rerun.stderr[-300:]}"]
    if rerun.returncode == 0:
        problems += _store_problems(out, reference)
    if tear:
        problems += [] if torn else ["no record to tear"]
        problems += [] if (out / "results.torn.jsonl").exists() else ["the torn fragment was not set aside"]
    if not kill["killed"]:
        problems.append(f"not killed: {kill.get('why', 'it had already finished')}")
    _note(suite, name, not problems, seed=1000 + index, delay=round(delay, 2), **kill, torn_line=torn,
          problems=problems)
    assert not problems, (name, kill, problems)


# ------------------------------------------------------------------ kill -9 and resume
@pytest.mark.parametrize("index", range(len(MOMENTS)), ids=[m[0] for m in MOMENTS])
def test_a_killed_run_resumes_to_the_same_records(index, tmp_path, tiny_grid, session_cache, data_root):
    _kill_and_resume(index, MOMENTS[index], tmp_path, tiny_grid, session_cache, data_root, "kill -9, --jobs 1")


@pytest.mark.parametrize("index", range(len(POOL_MOMENTS)), ids=[m[0] for m in POOL_MOMENTS])
def test_a_killed_pool_run_resumes_to_the_same_records(index, tmp_path, tiny_grid, session_cache, data_root):
    _kill_and_resume(100 + index, POOL_MOMENTS[index], tmp_path, tiny_grid, session_cache, data_root,
                     "kill -9, --jobs 2", ("--jobs", "2"))


# ------------------------------------------------------------------ a damaged cache
def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for at in (len(data) // 2, len(data) // 2 + 7):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_cache_entries_are_named_listed_and_recomputed(tmp_path, tiny_grid, session_cache, data_root):
    """Flipped bytes in a model, a truncated exposure, garbled metadata: each run stops before writing
    (exit 2) naming one of them, ``cache verify`` lists it with the ``cache rm`` command that clears it;
    once cleared, the run recomputes them. Deleted metadata (tensors without it: an interrupted write)
    is recomputed, and a stale lock file (its holder was killed) makes no one wait."""
    reference = _reference(tiny_grid)
    cache = _cache_copy(session_cache, tmp_path / "cache", (), reference)
    keys = {r["attack"]: (r["cache_key"], r["exposure_key"]) for r in reference.values()}
    (bad_model, bad_exposure), (blend_model, blend_exposure) = keys["badnets"], keys["blend"]
    _flip(cache / "models" / bad_model[:2] / f"{bad_model}.safetensors")
    truncated = cache / "exposures" / bad_exposure[:2] / f"{bad_exposure}.safetensors"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    garbled = cache / "models" / blend_model[:2] / f"{blend_model}.json"
    garbled.write_bytes(garbled.read_bytes()[:40] + b"\0garbage{" + garbled.read_bytes()[60:])
    (cache / "exposures" / blend_exposure[:2] / f"{blend_exposure}.json").unlink()
    lock = cache / "exposures" / blend_exposure[:2] / f"{blend_exposure}.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, filelock; filelock.FileLock(sys.argv[1])"
                               ".acquire(); print('held', flush=True); time.sleep(600)", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # the lock file stays behind, held by no one
    holder.wait()
    damaged = {bad_model: "flipped bytes in a model's .safetensors", bad_exposure: "a truncated exposure .safetensors",
               blend_model: "garbled metadata JSON"}

    named, listed, cleared, rounds = set(), set(), set(), 0
    out = tmp_path / "out"
    while True:
        rounds += 1
        assert rounds <= len(damaged) + 1
        run = _run(out, cache, data_root)
        if run.returncode == 0:
            break
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert run.returncode == 2 and len(errors) == 1, run.stderr[-2000:]
        key = next((k for k in damaged if k in errors[0] and k not in named), None)
        assert key is not None, errors[0]
        named.add(key)
        assert not out.exists(), "the run wrote before stopping"
        verify = _cli("cache", "verify", cache=cache)
        assert verify.returncode == 1, verify.stdout + verify.stderr
        rm = shlex.split(next(line.split("with: ", 1)[1] for line in verify.stdout.splitlines()
                              if "remove the broken ones with: " in line))
        listed |= {k for k in damaged if k[:12] in verify.stdout and k[:12] in rm}
        assert rm[:3] == ["ebyd-bench", "cache", "rm"] and key[:12] in rm and rm[-2:] == ["--cache-dir", str(cache)], rm
        # the printed command, for this entry alone, from a process whose default cache is elsewhere
        removed = _cli("cache", "rm", key[:12], *rm[-2:], cache=out.parent / "another-cache")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        cleared.add(key)
    stored = _store_problems(out, reference)
    log = _log(out)
    after = _cli("cache", "verify", cache=cache)
    for key, what in damaged.items():
        _note("damaged cache", what, key in named and key in listed and key in cleared and not stored,
              named_by_run=key in named, listed_by_verify=key in listed, cleared_by_its_command=key in cleared)
    _note("damaged cache", "deleted metadata JSON (tensors left)", not stored and "exposure" not in run.stderr,
          recomputed=True)
    _note("damaged cache", "stale lock file (its holder was SIGKILLed)", run.returncode == 0, waited=False)
    assert named == set(damaged), named
    assert listed == set(damaged) and cleared == set(damaged)
    assert not stored, stored
    assert "2 poisoned models trained" in run.stdout, run.stdout
    assert log.count("cache hit") == 0
    assert after.returncode == 0, after.stdout


def test_a_damaged_dataset_cache_is_rebuilt_with_one_warning(tmp_path, tiny_grid, session_cache, data_root):
    reference = _reference(tiny_grid)
    cache = _cache_copy(session_cache, tmp_path / "cache", (), reference)
    (dataset,) = (cache / "datasets").glob("*.npz")
    dataset.write_bytes(dataset.read_bytes()[: dataset.stat().st_size // 2])
    verify = _cli("cache", "verify", cache=cache)
    listed = dataset.stem in verify.stdout and verify.returncode == 1
    run = _run(tmp_path / "out", cache, data_root)
    problems = _store_problems(tmp_path / "out", reference) if run.returncode == 0 else [run.stderr[-500:]]
    warnings = (run.stdout + run.stderr).count("decoded dataset cache")
    _note("damaged cache", "truncated decoded dataset (.npz)", listed and not problems and warnings == 1,
          listed_by_verify=listed, warnings=warnings)
    assert listed, verify.stdout
    assert run.returncode == 0 and not problems and warnings == 1, (problems, run.stderr)


# ------------------------------------------------------------------ two runners, one cache
def test_two_runners_on_one_cache_train_each_model_once(tmp_path, tiny_grid, session_cache, data_root):
    reference = _reference(tiny_grid)
    cache = _cache_copy(session_cache, tmp_path / "cache", ("badnets", "blend"), reference)
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen(_command(out, cache, data_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(), cwd=REPO) for out in outs]
    results = [p.communicate(timeout=400) for p in procs]
    codes = [p.returncode for p in procs]
    logs = [_log(out) for out in outs]
    trained = [log.count("stage train ") - log.count("cache hit") for log in logs]
    problems = [p for out in outs for p in _store_problems(out, reference)]
    _note("concurrent runners", "two runners started together on one cache, different --out",
          codes == [0, 0] and sum(trained) == 2 and not problems, models_trained_per_runner=trained,
          problems=problems)
    assert codes == [0, 0], [r[1][-500:] for r in results]
    assert sum(trained) == 2, trained  # two poisoned models, each trained by exactly one runner
    assert sum(int(r[0].split(" poisoned models trained")[0].rsplit(", ", 1)[1]) for r in results) == 2
    assert not problems, problems


# ------------------------------------------------------------------ a full disk
@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` bytes under tmp_path (skips where this machine cannot mount one,
    e.g. without root); ``resize(size)`` remounts it larger, as freeing space would."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def mount_it(size: int) -> Path:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs on this machine: {done.stderr.strip()[:200]}")
        return mount

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    yield mount_it, resize
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _full_disk_problems(run: subprocess.CompletedProcess, roots: list[Path]) -> list[str]:
    """What is wrong with a run that met a full disk: it must fail with one line and leave nothing half-written."""
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    problems = [] if run.returncode == 2 and len(errors) == 1 and "no space left" in errors[0] else \
        [f"exit {run.returncode}, stderr: {run.stderr[-400:]}"]
    for root in roots:
        problems += [f"temporary file left: {p}" for p in root.rglob("*.tmp")]
        problems += [f"tensors without metadata: {p}" for p in root.rglob("*.safetensors")
                     if not p.with_suffix(".json").exists()]
        store = root / "results.jsonl"
        if store.exists():
            text = store.read_text()
            if text and not text.endswith("\n"):
                problems.append("results.jsonl ends in half a record")
            for line in text.splitlines():
                try:
                    json.loads(line)
                except ValueError:
                    problems.append(f"results.jsonl holds a torn line: {line[:60]}")
    return problems


def _directory_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("where", ["cache", "out"])
def test_a_full_disk_fails_with_one_line_and_resumes_once_space_is_back(where, small_disk, tmp_path, tiny_grid,
                                                                         session_cache, data_root):
    """``cache``: the cache's disk has room for the copied cache plus 256 KiB, and a poisoned model (about
    700 KB) must be trained and saved; ``out``: the output folder's disk has 24 KiB, less than the run's
    log, records and leaderboard need. Either way the run stops with one line and keeps nothing half-written;
    with the disk enlarged, the same command finishes with the records of the uninterrupted run."""
    mount, resize = small_disk
    reference = _reference(tiny_grid)
    if where == "cache":
        probe = _cache_copy(session_cache, tmp_path / "probe", ("blend",), reference)
        disk = mount(_directory_bytes(probe) + 2 * 2**20)  # tmpfs rounds to pages; fill it up to 256 KiB below
        cache, out = _cache_copy(session_cache, disk / "cache", ("blend",), reference), tmp_path / "out"
        shutil.rmtree(probe)
    else:
        disk = mount(24 * 2**10)
        cache, out = _cache_copy(session_cache, tmp_path / "cache", (), reference), disk / "out"
    if where == "cache":
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(0, free - 256 * 2**10))
    run = _run(out, cache, data_root)
    problems = _full_disk_problems(run, [cache, out])
    resize(512 * 2**20)
    rerun = _run(out, cache, data_root)
    problems += [] if rerun.returncode == 0 else [f"the rerun exited {rerun.returncode}: {rerun.stderr[-300:]}"]
    if rerun.returncode == 0:
        problems += _store_problems(out, reference)
    _note("full disk", f"the {'cache' if where == 'cache' else 'output folder'}'s disk fills up (tmpfs)",
          not problems, error=(run.stderr.strip().splitlines() or [""])[-1][:160], problems=problems)
    assert not problems, problems


# ------------------------------------------------------------------ the docs table
def render(summary: dict) -> str:
    """The Markdown table of docs/reliability.md from a summary this module wrote."""
    rows: dict[str, list[dict]] = {}
    for case in summary["cases"]:
        rows.setdefault(case["suite"], []).append(case)
    lines = ["| what was tried | cases | held |", "|---|---:|---:|"]
    for suite, cases in rows.items():
        lines.append(f"| **{suite}** | {len(cases)} | {sum(c['held'] for c in cases)} |")
        for c in cases:
            detail = ""
            if "last_log_line" in c:
                doing = c["last_log_line"].split(": {")[0]
                detail = f" — killed {c['delay']} s after its mark; run.log's last line: “{doing}”"
            lines.append(f"| {c['case']}{detail} | 1 | {'yes' if c['held'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
