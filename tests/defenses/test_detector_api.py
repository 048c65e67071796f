"""The harness side of detection: input-filter AUROC, inspection images, unchanged CA/ASR."""

from dataclasses import dataclass

import numpy as np
import pytest

from ebyd_bench.benchmark.methods import Defense, DefenseResult
from ebyd_bench.benchmark.registries import DEFENSES

pytestmark = pytest.mark.e2e


@dataclass
class CornerFilter(Defense):
    """Test-only input filter: suspicion = how much the BadNets corner deviates from its mean."""

    category = "input_filtering"

    def defend(self, model, exposed, ctx):
        reference = ctx.data.images[:, 29:, 29:].astype(float).mean(axis=0)  # from D_d only

        def score(images: np.ndarray) -> np.ndarray:
            return np.abs(images[:, 29:, 29:].astype(float) - reference).mean(axis=(1, 2, 3))

        return DefenseResult(fields={"flagged": True}, input_scorer=score,
                             images={"corner": reference / 255.0})


@pytest.fixture(scope="module", autouse=True)
def registered():
    if "test_corner_filter" not in DEFENSES:
        DEFENSES.add("test_corner_filter", CornerFilter, source="tests")  # not a built-in: the catalog ignores it


def test_input_filter_scores_are_turned_into_an_auroc(run_yaml, tmp_path):
    records, out = run_yaml(
        "dataset: {name: cifar10, train_subset: 300, test_subset: 200, defense_size: 100}\n"
        "model: {name: resnet18_narrow, params: {width: 8}}\n"
        "recipe: {name: tiny, epochs: 1, batch_size: 64}\n"
        "attacks: [badnets]\ndefenses: [none, test_corner_filter]\ndetection_eval_size: 150\n")
    recs = {r["defense"]: r for r in records}
    info = recs["test_corner_filter"]["defense_info"]
    assert info["test_corner_filter_auroc"] > 0.95  # the BadNets corner is trivially detectable
    assert info["flagged"] is True and recs["test_corner_filter"]["defense_category"] == "input_filtering"
    assert (out / info["images"]["corner"]).is_file()
    # a detector leaves the model untouched: same CA/ASR as no defense
    assert recs["test_corner_filter"]["ca"] == recs["none"]["ca"]
    assert recs["test_corner_filter"]["asr"] == recs["none"]["asr"]

    # the saved images come back as the recovered-trigger figure (paper Fig. 7)
    from ebyd_bench.reports.figures import render_figures
    from ebyd_bench.results import load_results

    paths = render_figures(load_results(out), tmp_path / "figures")
    assert any("recovered-triggers" in p.name and p.suffix == ".png" for p in paths)
