"""``ebyd-bench bench``: both loops measured, the projection is the grid's arithmetic, figures written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebyd_bench.cli import main

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def test_bench_measures_both_loops_and_projects_a_grid(tmp_path, data_root, capsys):
    assert main(["bench", "--model", "resnet18_narrow", "--steps", "2", "--batch-size", "16", "--precision", "fp32",
                 "--config", str(TINY), "--jobs", "2", "--data-root", str(data_root), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "project loop" in out and "bare loop" in out
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["project_img_per_s"] > 0 and figures["bare_img_per_s"] > 0
    assert figures["project_peak_gpu_bytes"] is None  # a CPU holds no device memory
    concurrent = figures["concurrent"]  # --jobs 2: two loops measured at once
    assert concurrent["jobs"] == 2 and len(concurrent["worker_img_per_s"]) == 2
    assert concurrent["aggregate_img_per_s"] > 0 and "2 project loops at once" in out
    projection = figures["projection"]
    # tiny.yaml: two poisoned models, one epoch, train_subset 600 of the 49,900 left beside D_d
    assert (projection["models"], projection["epochs"], projection["train_images"]) == (2, 1, 600)
    one_worker = 2 * 1 * 600 / figures["project_img_per_s"] / 3600
    assert abs(projection["one_worker_hours"] - one_worker) < 1e-9
    assert abs(projection["hours"] - 2 * 1 * 600 / concurrent["aggregate_img_per_s"] / 3600) < 1e-9
    assert figures["setting"]["batch_size"] == 16 and "hardware" in figures["provenance"]


def test_a_failing_concurrent_worker_is_one_error():
    from ebyd_bench.benchmark.bench import BenchSetting, concurrent_project_loops

    with pytest.raises(RuntimeError, match="concurrent bench worker failed: .*no_such_model"):
        concurrent_project_loops(BenchSetting(model="no_such_model", steps=1, batch_size=4, precision="fp32"), 2, 1)


@pytest.mark.e2e  # runs a grid
def test_bench_reads_stage_times_from_a_run(tiny_grid, capsys):
    from ebyd_bench.benchmark.bench import stage_seconds
    from ebyd_bench.results import load_results

    seconds = stage_seconds(load_results(tiny_grid))
    assert {"train", "expose", "defend", "evaluate"} <= set(seconds) and all(v >= 0 for v in seconds.values())


def test_a_worker_killed_without_a_report_releases_the_others():
    import queue
    from types import SimpleNamespace

    from ebyd_bench.benchmark.bench import _collect

    aborted = []
    barrier = SimpleNamespace(abort=lambda: aborted.append(True))
    results = queue.Queue()
    results.put((1.0, 2.0, None, None))  # one worker finished; the other was killed (SIGKILL: exit code -9)
    reports = _collect([SimpleNamespace(exitcode=0), SimpleNamespace(exitcode=-9)], barrier, results)
    assert aborted and len(reports) == 2 and "exited with code -9" in reports[1][3]


@pytest.mark.e2e  # reads a grid's records
def test_the_whole_grid_projection_counts_every_stage_at_its_measured_time(tiny_grid):
    from ebyd_bench.benchmark.bench import CELL_PARTS, method_seconds
    from ebyd_bench.benchmark.grid.config import load_configs
    from ebyd_bench.benchmark.grid.projection import project_grid
    from ebyd_bench.results import load_results

    records = load_results(tiny_grid)
    measured = method_seconds(records)
    grid = load_configs(TINY)[0]
    projection = project_grid(grid, 10.0, measured, jobs=2)
    # the same grid: two victims, two CUL exposures and one cell per record, each at the time it took
    assert projection["stages"] == 2 + 2 + len(records) and not projection["not_measured"]
    assert projection["train_hours"] * 3600 == pytest.approx(20.0)
    assert projection["expose_hours"] * 3600 == pytest.approx(2 * measured[("expose", "cul")])
    cells = sum(sum(t.get(k, 0.0) for k in CELL_PARTS) for t in records["timings"])
    assert projection["cell_hours"] * 3600 == pytest.approx(cells)
    total = 20.0 + 2 * measured[("expose", "cul")] + cells
    assert projection["one_worker_hours"] * 3600 == pytest.approx(total)
    longest = max(10.0 + (measured[("expose", exposure)] if isinstance(exposure, str) else 0.0) + measured[("cell", defense)]
                  for exposure, defense in zip(records["exposure_label"], records["defense_label"]))
    assert projection["hours_at_jobs"] * 3600 == pytest.approx(max(total / 2, longest))
    other = load_configs(TINY, ["defenses=[none, {name: ft, epochs: 1}]"])[0]
    assert project_grid(other, 10.0, measured)["not_measured"] == ["cell ft"]
