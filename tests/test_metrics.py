import numpy as np
import pytest

from benchmark.metrics import accuracy, attack_success_rate, backdoor_exposure_metric, prediction_shares


def test_accuracy_counts_every_sample():
    assert accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75


def test_asr_excludes_target_class_samples():
    labels = np.array([0, 0, 1, 2, 3, 4])
    preds = np.array([0, 0, 0, 0, 3, 1])  # two target-class samples must not count
    assert attack_success_rate(preds, labels, target=0) == pytest.approx(2 / 4)


def test_asr_needs_non_target_samples():
    with pytest.raises(ValueError):
        attack_success_rate(np.array([0]), np.array([0]), target=0)


def test_bem_matches_the_papers_onepixel_check():
    # reference §1.4: (98.70 − 91.76) / 98.70 = 0.0703 for the unexposed OnePixel model
    assert backdoor_exposure_metric([0.9870], [0.9176]) == pytest.approx(0.0703, abs=1e-4)
    assert backdoor_exposure_metric([1.0, 1.0], [0.5, 0.1]) == pytest.approx(0.7)


def test_prediction_shares():
    np.testing.assert_allclose(prediction_shares(np.array([1, 1, 3, 0]), 4), [0.25, 0.5, 0, 0.25])


def test_exposure_detection_auroc_separates_clean_from_backdoored():
    import pandas as pd

    from benchmark.summary import exposure_detection_auroc

    rows = [
        {"attack": "badnets", "exposure": "cul", "cache_key": "a", "exposed_label_share": 0.95},
        {"attack": "badnets", "exposure": "cul", "cache_key": "a", "exposed_label_share": 0.95},  # same model
        {"attack": "blend", "exposure": "cul", "cache_key": "b", "exposed_label_share": 0.60},
        {"attack": "none", "exposure": "cul", "cache_key": "c", "exposed_label_share": 0.40},
        {"attack": "none", "exposure": "cul", "cache_key": "d", "exposed_label_share": 0.70},
        {"attack": "badnets", "exposure": None, "cache_key": "a", "exposed_label_share": None},
    ]
    # pairs (pos, neg): (0.95 > 0.4), (0.95 > 0.7), (0.6 > 0.4), (0.6 < 0.7) → 3/4
    assert exposure_detection_auroc(pd.DataFrame(rows)) == {"cul": 0.75}
    assert exposure_detection_auroc(pd.DataFrame(rows[:3])) == {"cul": None}
