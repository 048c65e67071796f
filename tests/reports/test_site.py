"""The leaderboard site: generic sections, DER ranking, provenance links, and a real headless browser.

The browser test opens the page of a real tiny grid in Chromium (driven by Playwright), checks the
tables, sorts columns by clicking headers, follows a provenance link, and asserts that no request
other than the page itself was made. It skips when Chromium or Playwright is absent, unless
``EBYD_REQUIRE_BROWSER=1`` (CI), then it fails.
CI: ``apt-get install -y chromium`` and ``pip install playwright`` (never ``playwright install``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ebyd_bench.cli import main
from ebyd_bench.reports import render_leaderboard
from ebyd_bench.reports.leaderboard import build_context
from ebyd_bench.reports.scores import der

def _rec(attack: str, exposure: str | None, defense: str, ca: float, asr: float | None, seed: int = 0, **extra) -> dict:
    """A results.jsonl-like record with before-metrics, keys, provenance and timings."""
    rec = dict(dataset="cifar10", model="resnet18", attack=attack, exposure=exposure, defense=defense, seed=seed,
               ca=ca, asr=asr, ca_before=0.92, asr_before=None if attack == "none" else 1.0, target=0,
               cell_key=f"{attack}{exposure}{defense}{seed}".ljust(64, "0"), cache_key="c" * 64, config_hash="h" * 64,
               timings={"train": 10.0, "defend": 2.0}, defense_info={}, hardware={"device_name": "cpu"},
               provenance={"git_commit": "abc1234", "package_version": "0.1.0", "start_time": "2026-01-01T00:00:00"})
    rec.update(extra)
    return rec


@pytest.fixture()
def records() -> pd.DataFrame:
    return pd.DataFrame([
        _rec("badnets", None, "none", 0.92, 1.0),
        _rec("badnets", "cul", "rp", 0.90, 0.02, exposed_label=0, exposed_label_share=0.9, exposed_ca=0.1,
             exposed_asr=1.0, bem=0.9, defense_info={"rp_threshold": 0.4, "rp_sweep": [{"t": 0.1}]}),
        # detectors leave the model as it was: the harness records the undefended CA/ASR for them
        _rec("badnets", None, "strip", 0.92, 1.0, defense_category="input_filtering",
             defense_info={"strip_auroc": 0.6}),
        _rec("badnets", "cul", "strip", 0.92, 1.0, defense_category="model_inspection",
             defense_info={"strip_auroc": 0.95, "nc_label": 0, "nc_flagged": True, "anomaly_index": 3.1,
                           "images": {"mask": "artifacts/x/mask.png"}}),
        _rec("blend", None, "none", 0.92, 1.0),
        _rec("blend", "cul", "rp", 0.91, 0.10, exposed_label=3, exposed_label_share=0.5, exposed_ca=0.1,
             exposed_asr=0.9, bem=0.7),
        _rec("blend", None, "ft", 0.80, 0.50),  # a method that ran on one attack only
    ])


def test_der_formula() -> None:
    assert der(0.92, 0.90, 1.0, 0.02) == pytest.approx((0.98 - 0.02 + 1) / 2)
    assert der(0.92, 0.95, 0.5, 0.9) == pytest.approx(0.5)  # no gain counted, no CA loss
    assert der(0.9, 0.9, 1.0, 1.0) == 0.5  # the undefended model
    assert math.isnan(der(0.9, math.nan, 1.0, 0.0))


def test_ranking_and_sections(records: pd.DataFrame) -> None:
    (s,) = build_context(records)["sections"]
    ranking = {r["method"]: r for r in s["ranking"]}
    assert [r["method"] for r in s["ranking"]][0] == "CUL+RP"
    assert ranking["CUL+RP"]["der"] == pytest.approx(((0.98 - 0.02 + 1) / 2 + (0.90 - 0.01 + 1) / 2) / 2)
    assert ranking["No defense"]["der"] == pytest.approx(0.5) and ranking["No defense"]["reference"]
    assert ranking["FT"]["partial"] and ranking["FT"]["attacks"] == 1
    assert "STRIP" not in ranking and "CUL+STRIP" not in ranking  # detectors return no model: no DER
    assert s["methods"] == ["No defense", "CUL+RP", "FT"]  # ... and no removal column
    exposure = {e["attack"]: e for e in s["exposure"]}
    assert exposure["badnets"]["bem"] == pytest.approx(0.9)
    assert exposure["badnets"]["exposed_label_share"] == pytest.approx(90)
    cols = {(c["method"], c["measure"]) for c in s["detection"]["columns"]}
    assert {("STRIP", "strip_auroc"), ("CUL+STRIP", "strip_auroc"), ("CUL+STRIP", "nc_label"),
            ("CUL+STRIP", "nc_flagged"), ("CUL read-off", "exposed_label")} <= cols
    readoff = [c["method"] == "CUL read-off" for c in s["detection"]["columns"]].index(True)
    assert [r["vals"][readoff]["v"] for r in s["detection"]["rows"]] == [100.0, 0.0]  # blend read off label 3, target 0
    outputs = {o["method"]: o for o in s["outputs"]}
    # no image paths among the fields
    assert outputs["CUL+STRIP"]["fields"] == ["anomaly_index", "nc_flagged", "nc_label", "strip_auroc"]
    assert outputs["CUL+RP"]["fields"] == ["rp_threshold"]  # the sweep (a list of records) is left out


def test_sections_skip_absent_fields() -> None:
    plain = pd.DataFrame([_rec("badnets", None, "none", 0.9, 1.0), _rec("badnets", None, "ft", 0.9, 0.3)])
    (s,) = build_context(plain)["sections"]
    assert s["detection"] is None and s["outputs"] == [] and s["exposure"] == []


def test_page_links_every_number_to_provenance(records: pd.DataFrame, tmp_path: Path) -> None:
    html = render_leaderboard(records, tmp_path)["html"].read_text(encoding="utf-8")
    hrefs = set(re.findall(r'href="#(cell-[0-9a-z]+)"', html))
    ids = set(re.findall(r'<tr id="(cell-[0-9a-z]+)"', html))
    assert hrefs and hrefs <= ids
    for text in ("Ranking by DER", "strip_auroc", "anomaly_index", "abc1234", "config_hash", "data:image/png;base64,",
                 "max(0, ASR_before − ASR_after)"):
        assert text in html
    assert "http://" not in html and "https://" not in html and "<link" not in html


def test_merged_stores_count_a_shared_cell_once(records: pd.DataFrame) -> None:
    (s,) = build_context(pd.concat([records, records.assign(source="copy")]))["sections"]
    assert [c["n"] for c in s["rows"][0]["cells"] if c] == [1, 1]
    assert len(s["cells"]) == len(records)


def test_page_has_a_tab_per_dataset_model(records: pd.DataFrame, tmp_path: Path) -> None:
    other = records.assign(dataset="gtsrb", source="b/results.jsonl", cell_key=records["cell_key"].str[::-1])
    html = render_leaderboard(pd.concat([records, other]), tmp_path, figures=False)["html"].read_text(encoding="utf-8")
    assert html.count('role="tab"') == 2 and 'data-dataset="gtsrb"' in html and 'data-dataset="cifar10"' in html


# ------------------------------------------------------------------ a real grid in a real browser
@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of a Chromium binary usable by Playwright, or skip (fail when EBYD_REQUIRE_BROWSER=1)."""
    exe = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    try:
        import playwright.sync_api  # noqa: F401
        reason = None if exe else "no chromium on PATH (apt-get install chromium)"
    except ImportError:
        reason = "playwright not installed (pip install playwright; do not run `playwright install`)"
    if reason:
        if os.environ.get("EBYD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} but EBYD_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    return exe


def _column(table, col: int) -> list[str]:
    return table.locator(f"tbody tr > :nth-child({col + 1})").evaluate_all("els => els.map(e => e.dataset.v)")


@pytest.mark.e2e
def test_leaderboard_in_headless_browser(chromium: str, tiny_grid_copy: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert main(["report", str(tiny_grid_copy)]) == 0
    url = (tiny_grid_copy / "leaderboard.html").resolve().as_uri()
    routed, requested, errors = [], [], []

    def route(r):
        routed.append(r.request.url)
        return r.continue_() if r.request.url == url else r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page()
            page.on("request", lambda req: requested.append(req.url))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/*", route)
            page.goto(url)
            page.wait_for_load_state("networkidle")

            matrix = page.locator("section.tab table.matrix").first
            groups = matrix.locator("th.group").all_inner_texts()
            assert groups == ["No defense", "CUL+RP"]
            assert _column(matrix, 0) == ["badnets", "blend"]
            assert matrix.locator("tbody td a").count() == 8  # every CA/ASR number links to its provenance
            for name in ("ranking", "exposure", "detection", "outputs", "prov"):
                assert page.locator(f"section.tab table.{name}").count() >= 1, name
            assert page.locator("figure img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)") != []
            assert all(w > 0 for w in page.locator("figure img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)"))

            header = matrix.locator("th[data-col='0']")
            header.click()
            assert _column(matrix, 0) == ["badnets", "blend"] and header.get_attribute("data-dir") == "asc"
            header.click()
            assert _column(matrix, 0) == ["blend", "badnets"] and header.get_attribute("data-dir") == "desc"

            page.locator("details.prov summary").first.click()
            prov = page.locator("table.prov").first
            before = _column(prov, 6)
            prov.locator("th[data-col='6']").click()  # wall-clock seconds
            asc = [float(v) for v in _column(prov, 6)]
            assert asc == sorted(asc) and sorted(asc) == sorted(float(v) for v in before)
            prov.locator("th[data-col='6']").click()
            assert [float(v) for v in _column(prov, 6)] == sorted(asc, reverse=True)

            page.locator("details.prov").first.evaluate("d => d.open = false")
            link = matrix.locator("tbody td a").first
            target = link.get_attribute("href")[1:]
            link.click()
            assert page.locator(f"tr[id='{target}']").is_visible()  # the details opened on the link
            assert "config_hash" in page.locator(f"tr[id='{target}']").inner_text()
        finally:
            browser.close()
    assert errors == []
    assert routed == [url] and set(requested) == {url}, (routed, requested)
