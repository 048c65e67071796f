import numpy as np
import pytest

from ebyd_bench.benchmark.metrics import accuracy, attack_success_rate, backdoor_exposure_metric, prediction_shares, prior_matched


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
    # docs/methods.md §1.4: (98.70 − 91.76) / 98.70 = 0.0703 for the unexposed OnePixel model
    assert backdoor_exposure_metric([0.9870], [0.9176]) == pytest.approx(0.0703, abs=1e-4)
    assert backdoor_exposure_metric([1.0, 1.0], [0.5, 0.1]) == pytest.approx(0.7)


def test_prediction_shares():
    np.testing.assert_allclose(prediction_shares(np.array([1, 1, 3, 0]), 4), [0.25, 0.5, 0, 0.25])


def test_exposure_detection_auroc_separates_clean_from_backdoored():
    import pandas as pd

    from ebyd_bench.reports.statistics import exposure_detection_auroc

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


def test_grid_statistics_keep_labelled_exposure_settings_apart():
    import pandas as pd

    from ebyd_bench.reports.statistics import grid_statistics

    rows = [{"attack": a, "exposure": "cul", "exposure_label": label, "cache_key": key, "exposed_label_share": share}
            for label, shares in (("cul", (0.9, 0.5)), ("cul-3ep", (0.4, 0.6)))
            for (a, key), share in zip((("badnets", "a"), ("none", "c")), shares)]
    assert grid_statistics(pd.DataFrame(rows))["exposure_detection_auroc"] == {"cul": 1.0, "cul-3ep": 0.0}


def _binary_logits(margins):
    return np.stack([np.zeros(len(margins)), np.asarray(margins, float)], axis=1)


def test_prior_matched_sees_through_a_shift_away_from_the_target():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(50, int), np.ones(50, int)]
    clean = labels * 2.0 - 1.0 + rng.normal(0, 0.3, 100)  # margin of class 1 over class 0
    trig = np.full(40, 3.0) + rng.normal(0, 0.3, 40)      # the trigger pushes to class 1
    trig_labels = np.zeros(40, int)
    ca0, asr0 = prior_matched(_binary_logits(clean), labels, _binary_logits(trig), trig_labels, 1)
    assert (ca0, asr0) == (1.0, 1.0)
    # a "defense" that only lowers the target logit by 5: plain ASR 0, CACC 0.5
    shifted_clean, shifted_trig = _binary_logits(clean - 5), _binary_logits(trig - 5)
    assert attack_success_rate(shifted_trig.argmax(1), trig_labels, 1) == 0.0
    assert accuracy(shifted_clean.argmax(1), labels) == 0.5
    assert prior_matched(shifted_clean, labels, shifted_trig, trig_labels, 1) == (ca0, asr0)


def test_prior_matched_keeps_a_removed_backdoor_removed():
    labels = np.r_[np.zeros(3, int), np.ones(3, int)]
    clean = _binary_logits([-2, -1.5, -1, 1, 1.5, 2])
    trig = _binary_logits([-1.2, -2.0, 0.5])  # one triggered sample above the matched threshold (0)
    ca, asr = prior_matched(clean, labels, trig, np.zeros(3, int), 1)
    assert ca == 1.0 and asr == pytest.approx(1 / 3)


def test_prior_matched_multiclass_uses_the_target_versus_rest_margin():
    clean = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 4.0, 4.5]])
    labels = np.array([0, 1, 2, 1])
    trig = np.array([[0, 0, 1.0], [0, 0, 3.0]])
    ca, asr = prior_matched(clean, labels, trig, np.array([0, 1]), 2)
    # target share 1/4: only sample 2 (margin 5) is called "2"; sample 3 (margin 0.5) falls back to class 1
    assert ca == 1.0
    assert asr == 0.5  # threshold (5 + 0.5) / 2 = 2.75: the second triggered sample (margin 3) succeeds


def test_prior_matched_needs_non_target_triggered_samples():
    with pytest.raises(ValueError):
        prior_matched(_binary_logits([-1, 1]), np.array([0, 1]), _binary_logits([2.0]), np.array([1]), 1)
