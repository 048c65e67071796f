"""The cell-record schema: construction, the stored dict, upgrading v1 stores, generic detection statistics,
and the layering of results → reports."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from ebyd_bench.reports.statistics import grid_statistics, label_detection_auroc, model_detection_auroc
from ebyd_bench.results import SCHEMA_VERSION, CellRecord, ResultStore, load_records, load_results
from ebyd_bench.results import schema
from ebyd_bench.results.store import read_records

REPO = Path(__file__).resolve().parents[2]
MEASURED = REPO / "results" / "measured"
STORES = sorted(p.parent for p in MEASURED.rglob("results.jsonl"))
#: the stores whose grids ran on a text dataset (every other measured store is an image grid)
TEXT_STORES = {"quick-text-2core-avx2", "ripple-victim-retime-2core-avx2", "text", "openbackdoor-text-2core-avx512"}


def fields(**over) -> dict:
    """Keyword arguments of a complete image cell without an exposure."""
    base = dict(domain="image", cell_key="c" * 64, cache_key="m" * 64, config_name="t", config_hash="h" * 64,
                label="badnets × none × ft", dataset="cifar10", dataset_note="", model="resnet18", model_note="",
                model_params={}, recipe="quick", seed=0, eval_test_size=100, attack="badnets",
                attack_params={"target": 0}, target=0, poison_rate=0.1, exposure=None, exposure_label=None,
                defense="ft", defense_label="ft", defense_params={"epochs": 1}, defense_category="removal",
                defense_uses_exposure=False, defense_returns_model=True, defense_info={}, ca=0.9, ca_nt=0.89,
                asr=0.1, ca_prior_matched=0.9, asr_prior_matched=0.2, ca_before=0.92, asr_before=1.0,
                train_cached=False, timings={"train": 1.0}, hardware={"device": "cpu"},
                provenance={"git_commit": "abc"})
    base.update(over)
    return base


EXPOSED = dict(exposure="cul", exposure_label="cul", exposure_key="e" * 64, exposed_label=0, exposed_label_share=0.9,
               exposed_ca=0.1, exposed_asr=1.0, exposure_stop_reason="ca_min", exposure_trace=[{"step": 1}],
               bem=0.8, bem_0=0.1)


# ----------------------------------------------------------------------------- the record and its dict
def test_field_lists_are_the_dataclass_fields():
    names = list(schema.RECORD_FIELDS)
    assert names[:2] == ["schema_version", "domain"] and "extra" not in names and len(set(names)) == len(names)
    assert set(schema.REQUIRED_FIELDS) <= set(names) and "schema_version" not in schema.REQUIRED_FIELDS
    for group in (schema.METRIC_FIELDS, schema.BEFORE_FIELDS, schema.EXPOSURE_FIELDS, schema.HEADLINE_METRICS,
                  schema.IDENTITY_FIELDS, schema.OMITTED_WHEN_NONE):
        assert set(group) <= set(names)
    assert not set(schema.EXPOSURE_FIELDS) & set(schema.REQUIRED_FIELDS)  # a cell without an exposure has none


def test_to_dict_is_the_stored_record_and_round_trips():
    record = CellRecord(**fields())
    d = record.to_dict()
    assert d["schema_version"] == SCHEMA_VERSION == 2 and d["domain"] == "image"
    assert not set(schema.EXPOSURE_FIELDS) & set(d)  # no exposure: no exposure fields, as the runner always wrote
    assert d["exposure"] is None and d["exposure_label"] is None  # written even when unset
    assert "ftr" not in d  # not measured (image)
    assert json.loads(json.dumps(d)) == d
    assert CellRecord.from_dict(d) == record


def test_exposure_fields_are_all_written_with_an_exposure_even_unset_ones():
    d = CellRecord(**fields(**{**EXPOSED, "bem": None, "exposed_asr": None}, attack="none", asr=None)).to_dict()
    assert set(schema.EXPOSURE_FIELDS) <= set(d) and d["bem"] is None and d["exposed_asr"] is None
    assert d["asr"] is None  # a clean model's ASR is written as null, not left out
    clean = CellRecord(**fields(attack="none", asr=None, asr_before=None, ca_prior_matched=None,
                                asr_prior_matched=None)).to_dict()
    assert "asr_prior_matched" not in clean and "ca_prior_matched" not in clean and clean["asr_before"] is None


def test_constructor_and_reader_reject_what_is_not_a_record():
    with pytest.raises(TypeError):
        CellRecord(**fields(), defence="ft")  # a misspelt field fails where the record is built
    with pytest.raises(TypeError):
        CellRecord(**{k: v for k, v in fields().items() if k != "domain"})
    with pytest.raises(ValueError, match="schema version"):
        CellRecord(**fields(), schema_version=1)
    with pytest.raises(ValueError, match="domain"):
        CellRecord(**fields(domain=""))
    with pytest.raises(ValueError, match="extra keys"):
        CellRecord(**fields(), extra={"ca": 1.0})
    d = CellRecord(**fields()).to_dict()
    with pytest.raises(ValueError, match="missing field.*hardware"):
        CellRecord.from_dict({k: v for k, v in d.items() if k != "hardware"})
    with pytest.raises(ValueError, match="schema_version 3"):
        CellRecord.from_dict({**d, "schema_version": 3})


def test_unknown_keys_survive_in_extra():
    raw = {**CellRecord(**fields()).to_dict(), "gpu_hours": 0.5, "extra": {"x": 1}}
    record = CellRecord.from_dict(raw)
    assert record.extra == {"gpu_hours": 0.5, "extra": {"x": 1}} and record.to_dict() == raw


# ----------------------------------------------------------------------------- v1 stores
def _v1(**over) -> dict:
    """A record as the v1 runner wrote it: no domain, NC's scores under NC's names only."""
    d = CellRecord(**fields(**over)).to_dict()
    d.pop("domain")
    return {**d, "schema_version": 1}


def test_v1_records_are_upgraded_domain_from_the_v1_text_datasets():
    assert CellRecord.from_dict(_v1()).domain == "image"
    assert CellRecord.from_dict(_v1(dataset="sst2", model="minilm-l6")).domain == "text"
    assert {CellRecord.from_dict(_v1(dataset=d)).domain for d in ("imdb", "agnews", "twitter")} == {"text"}
    raw = _v1()
    raw.pop("schema_version")  # before versions were written: v1
    assert CellRecord.from_dict(raw).schema_version == SCHEMA_VERSION
    assert CellRecord.from_dict({**_v1(), "domain": "text"}).domain == "text"  # never overridden


def test_v1_nc_records_get_the_standard_detection_fields_copied():
    plain = _v1(defense="nc", defense_info={"anomaly_index": 3.5, "nc_label_scores": [3.5, 0.1], "nc_label_l1": 4.0})
    info = CellRecord.from_dict(plain).defense_info
    assert info["model_score"] == 3.5 and info["label_scores"] == [3.5, 0.1] and info["nc_label_l1"] == 4.0
    assert "model_score" not in plain["defense_info"]  # the raw record is not changed
    exposed = _v1(**EXPOSED, defense="nc", defense_info={"nc_label_l1": 12.0, "nc_label": 0})
    info = CellRecord.from_dict(exposed).defense_info
    assert info["model_score"] == -12.0 and "label_scores" not in info
    other = CellRecord.from_dict(_v1(defense_info={"anomaly_index": 1.0})).defense_info
    assert other == {"anomaly_index": 1.0}  # only NC's own names are known to the upgrade


@pytest.mark.parametrize("store", STORES, ids=[str(s.relative_to(MEASURED)) for s in STORES])
def test_measured_records_upgrade_to_their_content_plus_domain(store):
    for raw, record in zip(read_records(store / "results.jsonl"), load_records(store)):
        d = record.to_dict()
        assert d["domain"] == ("text" if store.name in TEXT_STORES else "image")
        if raw["schema_version"] == SCHEMA_VERSION:
            assert d == raw
            continue
        changed = {k for k in set(raw) | set(d) if raw.get(k, "absent") != d.get(k, "absent")}
        assert changed <= {"schema_version", "domain", "exposure_label", "defense_info"}, changed
        if "exposure_label" in changed:
            assert "exposure_label" not in raw and d["exposure_label"] is None
        if "defense_info" in changed:  # NC: the standard names added, nothing else touched
            assert raw["defense"] == "nc"
            extra = {k: v for k, v in d["defense_info"].items() if k not in raw["defense_info"]}
            assert set(extra) <= set(schema.DETECTION_FIELDS) and "model_score" in extra
        assert CellRecord.from_dict(d) == record


def test_store_appends_records_and_loads_v1_and_v2_in_one_shape(tmp_path):
    store = ResultStore(tmp_path)
    (tmp_path / "results.jsonl").write_text(json.dumps(_v1(cell_key="a" * 64)) + "\n")
    store.append(CellRecord(**fields(cell_key="b" * 64)))
    store.append(_v1(cell_key="c" * 64))  # a mapping is read like a stored line
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["schema_version"] for r in lines] == [1, 2, 2]
    assert lines[1] == CellRecord(**fields(cell_key="b" * 64)).to_dict()
    assert store.finished_cells() == {"a" * 64, "b" * 64, "c" * 64}
    assert all(isinstance(r, CellRecord) for r in store.records())
    df = load_results(tmp_path)
    assert (df["schema_version"] == 2).all() and (df["domain"] == "image").all() and df["source"].notna().all()
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write(json.dumps({"cell_key": "d", "ca": 0.5}) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:4: not a result record: .*missing field"):
        load_results(tmp_path)


# ----------------------------------------------------------------------------- generic detection statistics
def _inspected(attack, key, defense="probe", exposure=None, **info):
    return {"attack": attack, "cache_key": key, "exposure": exposure, "defense": defense, "defense_label": defense,
            "target": 1, "defense_info": info}


def test_statistics_read_any_defense_that_reports_the_standard_fields():
    rows = [_inspected("badnets", "m1", model_score=0.9, label_scores=[0.1, 0.9, 0.0]),
            _inspected("blend", "m2", model_score=0.2, label_scores=[0.5, 0.4, 0.0]),
            _inspected("none", "c1", model_score=0.1, label_scores=[0.3, 0.3, 0.3]),
            _inspected("badnets", "m1", exposure="cul", model_score=5.0),
            _inspected("none", "c1", exposure="cul", model_score=-math.inf),
            _inspected("badnets", "m1", defense="ft", anomaly_index=9.0)]  # no standard field: not a detector
    records = pd.DataFrame(rows)
    assert model_detection_auroc(records) == {"cul+probe": 1.0, "probe": 1.0}
    assert label_detection_auroc(records) == {"probe": pytest.approx((1.0 + 0.5) / 2)}
    labelled = records.assign(defense_label=["probe-v2"] * 3 + ["probe"] * 3)  # a labelled setting is kept apart
    assert set(model_detection_auroc(labelled)) == {"probe-v2", "cul+probe"}


@pytest.mark.parametrize("store", [s for s in STORES if s.name == "quick-defenses-2core-avx2-fp32"])
def test_nc_statistics_of_a_v1_store_are_the_ones_it_published(store):
    published = json.loads((store / "summary.json").read_text())
    stats = grid_statistics(load_results(store))
    for key in ("model_detection_auroc", "label_detection_auroc", "exposure_detection_auroc"):
        assert stats[key] == published[key], key


# ----------------------------------------------------------------------------- layering
def _imports(folder: Path) -> dict[str, set[str]]:
    out = {}
    for path in sorted(folder.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[path.name] = names
    return out


def test_results_import_nothing_from_reports_and_reports_nothing_from_the_grid():
    for name, modules in _imports(REPO / "results").items():
        assert not any(m.startswith("ebyd_bench.reports") for m in modules), name
    below = ("ebyd_bench.benchmark.grid", "ebyd_bench.benchmark.domains")
    for name, modules in _imports(REPO / "reports").items():
        assert not any(m.startswith(below) for m in modules), name
