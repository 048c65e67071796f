"""A small real grid (CIFAR-10 images, tiny model) through the CLI: results, resume, cache sharing,
determinism and corruption handling. Numbers are meaningless at this scale; behaviour is not."""

import json
import shutil

import pytest

from ebyd_bench.cli import main
from ebyd_bench.results.schema import SCHEMA_VERSION, WEAK_BACKDOOR_ASR, CellRecord

pytestmark = pytest.mark.e2e

#: written only for cells with an exposure, or only when a metric exists
CONDITIONAL = {"exposed_label", "exposed_ca", "exposed_asr", "bem", "ca_prior_matched", "asr_prior_matched"}


def run(config, out, cache, data_root):
    return main(["run", str(config), "--out", str(out), "--cache-dir", str(cache), "--data-root", str(data_root)])


def records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def metrics(recs):
    return sorted((r["cell_key"], r["ca"], r["asr"], r.get("exposed_label")) for r in recs)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data_root, cifar, session_cache):
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    base = tmp_path_factory.mktemp("e2e")
    cache = base / "cache"
    shutil.copytree(session_cache / "datasets", cache / "datasets")  # reuse the decoded arrays
    out = base / "out1"
    assert run(config, out, cache, data_root) == 0
    return config, cache, out, data_root


def test_grid_writes_one_record_per_cell(first_run):
    _, _, out, _ = first_run
    recs = records(out)
    assert len(recs) == 4  # 2 attacks × cul × {none, rp}
    for r in recs:
        assert CellRecord.from_dict(r).to_dict() == r  # exactly the schema's shape, nothing lost or extra
        assert r["schema_version"] == SCHEMA_VERSION and r["domain"] == "image"
        assert CONDITIONAL <= set(r), CONDITIONAL - set(r)
        assert 0 <= r["ca"] <= 1 and 0 <= r["asr"] <= 1
        assert r["exposure"] == "cul" and r["target"] == 0
        assert set(r["timings"]) >= {"train", "expose", "defend", "evaluate"}
    assert {(r["attack"], r["defense"]) for r in recs} == {(a, d) for a in ("badnets", "blend") for d in ("none", "rp")}
    for name in ("leaderboard.html", "leaderboard.tex", "run.log", "summary.json", "config.yaml"):
        assert (out / name).exists(), name


def test_the_log_flags_exactly_the_victims_whose_backdoor_did_not_take(first_run):
    """A defense's ASR on a victim that never learned its trigger measures nothing, so the run warns,
    once per victim, for those below the threshold and for no other."""
    _, _, out, _ = first_run
    log = (out / "run.log").read_text()
    for attack in ("badnets", "blend"):
        asr = next(r["asr_before"] for r in records(out) if r["attack"] == attack)
        assert log.count(f"victim {attack} (model") == int(asr < WEAK_BACKDOOR_ASR), (attack, asr)


def test_rp_records_a_diagnostic_sweep_that_matches_its_own_choice(first_run):
    """Every fixed threshold 0.05-0.90 is measured on test data after RP returned (§7.1-6); the row at
    the chosen threshold prunes as many channels as RP reported."""
    _, _, out, _ = first_run
    for r in records(out):
        info = r["defense_info"]
        if r["defense"] != "rp":
            assert "diagnostic_sweep" not in info
            continue
        sweep = info["diagnostic_sweep"]
        assert [row["t"] for row in sweep] == [round(0.05 * i, 2) for i in range(1, 19)]
        assert all(0 <= row["test_ca"] <= 1 and 0 <= row["test_asr"] <= 1 for row in sweep)
        assert [row["pruned"] for row in sweep] == sorted(row["pruned"] for row in sweep)
        if info.get("rp_threshold") is not None:
            chosen = next(row for row in sweep if row["t"] == info["rp_threshold"])
            assert chosen["pruned"] == info["rp_pruned"]
        assert r["timings"]["diagnostics"] >= 0


def test_rerun_resumes_without_recomputing(first_run):
    config, cache, out, data_root = first_run
    before = (out / "results.jsonl").read_text()
    assert run(config, out, cache, data_root) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cells_run"] == 0 and summary["cells_skipped"] == 4
    assert (out / "results.jsonl").read_text() == before


def test_dry_run_reports_the_cache_and_writes_nothing(first_run, tmp_path, capsys):
    config, cache, out, data_root = first_run
    fresh = tmp_path / "never"
    args = ["run", str(config), "--cache-dir", str(cache), "--data-root", str(data_root), "--dry-run"]
    assert main([*args, "--out", str(fresh)]) == 0
    text = capsys.readouterr().out
    assert "4 cells to run, 0 already finished" in text
    assert "poisoned models: 2 in the cache, 0 to compute" in text and "to compute (" not in text
    assert not fresh.exists()
    assert main([*args, "--out", str(out)]) == 0
    assert "0 cells to run, 4 already finished" in capsys.readouterr().out


def test_new_out_shares_the_cache_and_reproduces_metrics_in_two_shards(first_run, tmp_path):
    """Two shards of the grid in a new --out (run one after the other here; concurrently on a
    cluster) train nothing again and together give the unsharded run's records."""
    config, cache, out, data_root = first_run
    out2 = tmp_path / "out2"
    for shard in ("0/2", "1/2"):
        assert main(["run", str(config), "--out", str(out2), "--cache-dir", str(cache), "--data-root",
                     str(data_root), "--shard", shard]) == 0
        summary = json.loads((out2 / "summary.json").read_text())
        assert summary["models_trained"] == 0 and summary["cells_run"] == 2  # one attack's two cells
    assert metrics(records(out2)) == metrics(records(out))
    assert all(r["train_cached"] for r in records(out2))


def test_training_is_deterministic_on_cpu(first_run, tmp_path):
    config, cache, out, data_root = first_run
    fresh = tmp_path / "fresh-cache"
    shutil.copytree(cache / "datasets", fresh / "datasets")
    assert run(config, tmp_path / "out3", fresh, data_root) == 0
    assert metrics(records(tmp_path / "out3")) == metrics(records(out))
    first = {p.name: p.read_bytes() for p in (cache / "models").rglob("*.safetensors")}
    again = {p.name: p.read_bytes() for p in (fresh / "models").rglob("*.safetensors")}
    assert first == again


def test_corrupted_cache_file_is_reported_not_used(first_run, tmp_path, capsys):
    config, cache, _, data_root = first_run
    broken = tmp_path / "broken-cache"
    shutil.copytree(cache, broken)
    victim = next((broken / "models").rglob("*.safetensors"))
    victim.write_bytes(b"garbage")
    out4 = tmp_path / "out4"
    assert run(config, out4, broken, data_root) == 2
    assert "corrupted cache file" in capsys.readouterr().err
    assert not (out4 / "results.jsonl").exists() or records(out4) == []
    assert victim.read_bytes() == b"garbage"  # reported, never silently overwritten


def test_report_rerenders_from_results(first_run, tmp_path):
    _, _, out, _ = first_run
    assert main(["report", str(out), "--out", str(tmp_path)]) == 0
    assert "badnets" in (tmp_path / "leaderboard.html").read_text()
