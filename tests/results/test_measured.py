"""The measured runs committed under results/measured/ (the numbers the README quotes) stay loadable
and renderable as the schema and the reports evolve."""

from pathlib import Path

import pytest

from ebyd_bench.reports.leaderboard import build_context
from ebyd_bench.results import load_results

MEASURED = Path(__file__).resolve().parents[2] / "results" / "measured"
STORES = sorted(p.parent for p in MEASURED.glob("*/results.jsonl"))


def test_there_are_measured_runs():
    assert STORES, f"no measured runs under {MEASURED}"


@pytest.mark.parametrize("store", STORES, ids=[s.name for s in STORES])
def test_a_measured_run_loads_and_renders(store):
    df = load_results(store)
    assert len(df) and df["cell_key"].is_unique
    assert df["ca"].between(0, 1).all() and df["asr"].dropna().between(0, 1).all()
    assert all(isinstance(p, dict) and p.get("git_commit") and p.get("hardware") for p in df["provenance"])
    (section,) = build_context(df)["sections"]
    assert section["rows"] and section["methods"][0] == "No defense"
    assert (store / "config.yaml").is_file() and (store / "leaderboard.md").is_file()
