"""Regression check (`ebyd-bench compare`): pure comparison logic and the CLI on a real grid's store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebyd_bench.cli import main
from ebyd_bench.reports.compare import compare, describe, parse_tolerances, render_markdown

def _rec(key: str, **extra) -> dict:
    rec = dict(cell_key=key, dataset="cifar10", model="resnet18", attack="badnets", exposure="cul", defense="rp",
               seed=0, ca=0.90, asr=0.02, bem=0.9, exposed_ca=0.1, exposed_asr=1.0,
               timings={"train": 10.0, "defend": 2.0},
               defense_info={"rp_threshold": 0.4, "strip_auroc": 0.9, "rp_sweep": [{"t": 0.1, "dd_acc": 0.5}]})
    rec.update(extra)
    return rec


def test_parse_tolerances() -> None:
    tol = parse_tolerances("ca=0.005, strip_auroc=0.1")
    assert tol["ca"] == 0.005 and tol["strip_auroc"] == 0.1 and tol["asr"] == 0.02
    for bad in ("ca", "ca=x", "=0.1", "ca=-1"):
        with pytest.raises(ValueError, match="bad tolerance"):
            parse_tolerances(bad)


def test_identical_and_within_tolerance_pass() -> None:
    base = [_rec("a"), _rec("b", attack="blend")]
    assert not compare(base, base).regressed
    nudged = [_rec("a", ca=0.905, asr=0.035), _rec("b", attack="blend")]
    assert not compare(base, nudged).regressed  # |Δca| 0.005 ≤ 0.01, |Δasr| 0.015 ≤ 0.02


def test_moved_metrics_are_regressions_in_either_direction() -> None:
    base = [_rec("a"), _rec("b", attack="blend")]
    result = compare(base, [_rec("a", asr=0.07), _rec("b", attack="blend", ca=0.85)])
    assert result.regressed
    assert {(c.metric, round(c.delta, 4)) for c in result.changes} == {("asr", 0.05), ("ca", -0.05)}
    asr = next(c for c in result.changes if c.metric == "asr")
    assert asr.cell == "badnets × cul × rp seed=0 (cifar10/resnet18) [a]"


def test_defense_info_scores_compared_but_not_choices() -> None:
    base = [_rec("a")]
    cur = [_rec("a", defense_info={"rp_threshold": 0.7, "strip_auroc": 0.8, "new_auroc": 0.5})]
    changes = {c.metric: c for c in compare(base, cur).changes}
    assert set(changes) == {"defense_info.strip_auroc", "defense_info.new_auroc"}  # rp_threshold is a choice
    assert changes["defense_info.new_auroc"].baseline is None
    widened = compare(base, cur, {"strip_auroc": 0.2})  # a field that appeared is always reported
    assert {c.metric for c in widened.changes} == {"defense_info.new_auroc"}


def test_missing_cells_fail_new_cells_inform_and_timing() -> None:
    base = [_rec("a"), _rec("b", attack="blend")]
    cur = [_rec("a", timings={"train": 10.0, "defend": 30.0}), _rec("c", attack="wanet")]
    result = compare(base, cur, time_tolerance=0.5)
    assert result.regressed and result.missing == [describe(base[1])] and result.added == [describe(cur[1])]
    assert [round(t.ratio, 2) for t in result.timings] == [3.33] and result.total_seconds == (12.0, 40.0)
    text = render_markdown(result, "base", "cur")
    assert "REGRESSION" in text and "Missing in current run" in text and "wanet" in text and "3.33×" in text
    only_new = compare(base, [*base, _rec("c", attack="wanet")])
    assert not only_new.regressed and only_new.added


def test_environment_changes_are_reported() -> None:
    base = [_rec("a", provenance={"git_commit": "aaa", "torch": "2.5"}, hardware={"device_name": "cpu"})]
    cur = [_rec("a", provenance={"git_commit": "bbb", "torch": "2.5"}, hardware={"device_name": "cpu"})]
    result = compare(base, cur)
    assert result.environment == [("git_commit", "aaa", "bbb")] and not result.regressed
    assert "| git_commit | aaa | bbb |" in render_markdown(result, "b", "c")


def test_match_by_fields_when_keys_change() -> None:
    base, cur = [_rec("old-key")], [_rec("new-key", asr=0.5)]
    assert compare(base, cur).missing  # keys differ: nothing matched
    result = compare(base, cur, match="fields")
    assert result.matched == 1 and [c.metric for c in result.changes] == ["asr"]


# ------------------------------------------------------------------ the CLI on a real grid's store
@pytest.mark.e2e
def test_cli_compare_real_store(tiny_grid: Path, tmp_path: Path, capsys) -> None:
    assert main(["compare", str(tiny_grid), str(tiny_grid)]) == 0
    assert "compare: OK" in capsys.readouterr().out

    records = [json.loads(line) for line in (tiny_grid / "results.jsonl").read_text().splitlines() if line.strip()]
    victim = next(r for r in records if r["defense"] == "rp")
    victim["asr"] += 0.05
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = tmp_path / "report.md"
    assert main(["compare", str(tiny_grid), str(tmp_path), "--out", str(report)]) == 1
    out = capsys.readouterr().out
    assert "compare: REGRESSION" in out and "1 metric changes beyond tolerance" in out
    row = next(line for line in out.splitlines() if "`asr`" in line)
    assert victim["label"] in row and victim["cell_key"][:12] in row and "+0.0500" in row
    assert report.read_text().strip() == out.strip()
    assert main(["compare", str(tiny_grid), str(tmp_path), "--tolerance", "asr=0.06"]) == 0

    assert main(["compare", str(tiny_grid), str(tmp_path / "nowhere")]) == 2
    assert "error: no results" in capsys.readouterr().err
