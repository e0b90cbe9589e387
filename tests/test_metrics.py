"""core.metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from core import metrics

# y/p pair whose positive-vs-negative orderings are 3 of 4 correct: AUROC 0.75.
Y4 = [0, 0, 1, 1]
P4 = [0.1, 0.4, 0.35, 0.8]

# Hand-checked ROC for Y7/P7 (threshold: tpr, fpr, J):
#   0.9: 1/3, 0, .333   0.7: 2/3, 0, .667   0.5: 2/3, 1/4, .417   0.45: 1, 1/4, .750
#   0.3: 1, 1/2, .5     0.2: 1, 3/4, .25    0.1: 1, 1, 0
Y7 = [0, 0, 0, 0, 1, 1, 1]
P7 = [0.1, 0.2, 0.3, 0.5, 0.45, 0.7, 0.9]


def _synthetic(n: int, seed: int, separation: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    y[:2] = [0, 1]  # both classes, whatever the draw
    logits = rng.normal(separation * (2 * y - 1), 1.0)
    return y, expit(logits)


def _assert_plain_json(value) -> None:
    """Only built-in JSON types, recursively: np.float64 is a float subclass, so check exact types."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str
            _assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain_json(v)
    else:
        assert value is None or type(value) in (int, float, str, bool), f"{value!r} is {type(value)}"
        if type(value) is float:
            assert math.isfinite(value)


# --- AUROC and ROC points ---------------------------------------------------------------


def test_auroc_hand_value():
    assert metrics.auroc(Y4, P4) == pytest.approx(0.75)


def test_auroc_counts_ties_as_half():
    # One positive tied with one of two negatives, above the other: (1 + 0.5) / 2.
    assert metrics.auroc([0, 0, 1], [0.2, 0.5, 0.5]) == pytest.approx(0.75)


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        metrics.auroc([1, 1, 1], [0.2, 0.5, 0.9])


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 2], [0.1, 0.2], "0 .normal. or 1"),
        ([0, 1, 1], [0.1, 0.2], "3 labels but 2"),
        ([0, 1], [0.1, 1.5], r"\[0, 1\]"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([], [], "empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(y, p, match):
    with pytest.raises(ValueError, match=match):
        metrics.threshold_metrics(y, p, 0.5)


def test_roc_points_hand_values():
    roc = metrics.roc_points(Y4, P4)
    assert roc["fpr"] == pytest.approx([0.0, 0.0, 0.5, 0.5, 1.0])
    assert roc["tpr"] == pytest.approx([0.0, 0.5, 0.5, 1.0, 1.0])
    # sklearn's +inf first threshold becomes 1.0.
    assert roc["thresholds"] == pytest.approx([1.0, 0.8, 0.4, 0.35, 0.1])


def test_roc_points_thinning_keeps_ends_and_subset():
    y, p = _synthetic(2000, seed=1, separation=0.5)
    full = metrics.roc_points(y, p, max_points=10_000)
    thin = metrics.roc_points(y, p, max_points=50)
    assert len(full["fpr"]) > 50
    assert 2 <= len(thin["fpr"]) <= 50
    assert len(thin["fpr"]) == len(thin["tpr"]) == len(thin["thresholds"])
    assert (thin["fpr"][0], thin["tpr"][0], thin["thresholds"][0]) == (0.0, 0.0, 1.0)
    assert (thin["fpr"][-1], thin["tpr"][-1]) == (full["fpr"][-1], full["tpr"][-1]) == (1.0, 1.0)
    full_points = set(zip(full["fpr"], full["tpr"], full["thresholds"], strict=True))
    assert set(zip(thin["fpr"], thin["tpr"], thin["thresholds"], strict=True)) <= full_points
    assert thin["fpr"] == sorted(thin["fpr"])


def test_roc_points_rejects_too_few_points():
    with pytest.raises(ValueError, match="max_points"):
        metrics.roc_points(Y4, P4, max_points=1)


# --- bootstrap CI ------------------------------------------------------------------------


def test_auroc_ci_brackets_point_and_shrinks_with_more_data():
    y_small, p_small = _synthetic(60, seed=2)
    y_big, p_big = _synthetic(3000, seed=3)
    point_s, lo_s, hi_s = metrics.auroc_ci(y_small, p_small, n_boot=400, seed=0)
    point_b, lo_b, hi_b = metrics.auroc_ci(y_big, p_big, n_boot=400, seed=0)
    assert point_s == pytest.approx(metrics.auroc(y_small, p_small))
    assert lo_s <= point_s <= hi_s
    assert lo_b <= point_b <= hi_b
    assert 0.0 <= lo_s < hi_s <= 1.0
    assert (hi_b - lo_b) < (hi_s - lo_s) / 2  # ~√50 ≈ 7× narrower in expectation
    assert all(type(v) is float for v in (point_s, lo_s, hi_s))


def test_auroc_ci_is_reproducible_and_seed_dependent():
    y, p = _synthetic(80, seed=4)
    assert metrics.auroc_ci(y, p, n_boot=200, seed=7) == metrics.auroc_ci(y, p, n_boot=200, seed=7)
    assert metrics.auroc_ci(y, p, n_boot=200, seed=7) != metrics.auroc_ci(y, p, n_boot=200, seed=8)


def test_auroc_ci_skips_single_class_resamples():
    # With 1 positive in 4, ~32 % of resamples miss it; the interval must still come out finite.
    point, lo, hi = metrics.auroc_ci([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9], n_boot=200, seed=0)
    assert point == 1.0
    assert lo == hi == 1.0


def test_fast_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    assert metrics._fast_auroc(y, p) == pytest.approx(metrics.auroc(y, p), abs=1e-12)


# --- threshold metrics --------------------------------------------------------------------


def test_threshold_metrics_hand_values():
    # p >= 0.35 → predictions [0, 1, 1, 1]: tp 2, fp 1, tn 1, fn 0.
    # κ: p_o = 0.75, p_e = 0.5·0.75 + 0.5·0.25 = 0.5, κ = (0.75 − 0.5) / 0.5 = 0.5.
    m = metrics.threshold_metrics(Y4, P4, 0.35)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 0)
    assert m["threshold"] == 0.35
    assert m["sensitivity"] == pytest.approx(1.0)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["ppv"] == pytest.approx(2 / 3)
    assert m["npv"] == pytest.approx(1.0)
    assert m["kappa"] == pytest.approx(0.5)
    assert set(m) == {
        "threshold",
        "sensitivity",
        "specificity",
        "kappa",
        "accuracy",
        "ppv",
        "npv",
        "tp",
        "fp",
        "tn",
        "fn",
    }
    _assert_plain_json(m)


def test_threshold_is_inclusive():
    assert metrics.threshold_metrics(Y4, P4, 0.8)["tp"] == 1
    assert metrics.threshold_metrics(Y4, P4, 0.8000001)["tp"] == 0


def test_threshold_metrics_undefined_ratios_are_none():
    m = metrics.threshold_metrics([0, 0], [0.1, 0.2], 0.5)
    assert m["sensitivity"] is None
    assert m["ppv"] is None
    assert m["kappa"] is None
    assert m["specificity"] == 1.0
    assert m["npv"] == 1.0
    json.dumps(m, allow_nan=False)


# --- threshold choice ---------------------------------------------------------------------


def test_choose_threshold_youden_hand_value():
    threshold, how = metrics.choose_threshold(Y7, P7)
    assert threshold == pytest.approx(0.45)
    assert how == "Youden J on val (J=0.750)"
    assert type(threshold) is float


def test_choose_threshold_youden_tie_takes_highest_threshold():
    # Y4/P4: J = 0.5 at both 0.8 and 0.35.
    threshold, how = metrics.choose_threshold(Y4, P4)
    assert threshold == pytest.approx(0.8)
    assert "J=0.500" in how


@pytest.mark.parametrize(("target", "expected"), [(0.9, 0.45), (0.6, 0.7), (0.3, 0.9), (1.0, 0.45)])
def test_choose_threshold_target_sensitivity(target, expected):
    threshold, how = metrics.choose_threshold(Y7, P7, method="sensitivity", target_sensitivity=target, split="tune")
    assert threshold == pytest.approx(expected)
    assert how == f"sensitivity ≥ {target:.2f} on tune"
    assert metrics.threshold_metrics(Y7, P7, threshold)["sensitivity"] >= target


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "f1"}, "unknown threshold method"),
        ({"method": "sensitivity"}, "target_sensitivity"),
        ({"method": "sensitivity", "target_sensitivity": 1.5}, "target_sensitivity"),
        ({"target_sensitivity": 0.9}, "only used with method='sensitivity'"),
    ],
)
def test_choose_threshold_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.choose_threshold(Y7, P7, **kwargs)


# --- calibration --------------------------------------------------------------------------


def test_calibration_two_bins_by_hand():
    # Bin [0, .5): p .2, .4 → mean .3, 1 of 2 abnormal → gap .2
    # Bin [.5, 1]: p .7, .9 → mean .8, 1 of 2 abnormal → gap .3;  ECE = .5·.2 + .5·.3 = .25
    y, p = [0, 1, 1, 0], [0.2, 0.4, 0.7, 0.9]
    bins = metrics.calibration_bins(y, p, n_bins=2)
    assert [(b["lo"], b["hi"], b["count"]) for b in bins] == [(0.0, 0.5, 2), (0.5, 1.0, 2)]
    assert bins[0]["mean_predicted"] == pytest.approx(0.3)
    assert bins[1]["mean_predicted"] == pytest.approx(0.8)
    assert bins[0]["fraction_positive"] == bins[1]["fraction_positive"] == 0.5
    assert metrics.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.25)


def test_calibration_edges_and_empty_bins():
    bins = metrics.calibration_bins([0, 1, 1], [0.0, 0.5, 1.0], n_bins=4)
    assert [b["count"] for b in bins] == [1, 0, 1, 1]  # 0.5 opens bin 3, 1.0 closes the last
    assert bins[1]["mean_predicted"] is None
    assert bins[1]["fraction_positive"] is None
    _assert_plain_json(bins)


def test_ece_is_zero_when_perfectly_calibrated():
    # Every bin's fraction positive equals its mean prediction.
    y = [0, 0, 0, 1, 1, 1, 1, 0]
    p = [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75]
    assert metrics.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.floats(0, 1, allow_nan=False)),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 15),
)
def test_calibration_bins_partition_samples(pairs, n_bins):
    y, p = zip(*pairs, strict=True)
    bins = metrics.calibration_bins(list(y), list(p), n_bins=n_bins)
    assert len(bins) == n_bins
    assert sum(b["count"] for b in bins) == len(pairs)
    for b in bins:
        if b["count"]:
            assert b["lo"] - 1e-12 <= b["mean_predicted"] <= b["hi"] + 1e-12
    assert 0.0 <= metrics.expected_calibration_error(list(y), list(p), n_bins) <= 1.0


# --- temperature scaling ------------------------------------------------------------------


def test_fit_temperature_recovers_two():
    rng = np.random.default_rng(6)
    true_logits = rng.normal(0.0, 2.0, size=20_000)
    y = (rng.random(true_logits.size) < expit(true_logits)).astype(int)
    overconfident = 2.0 * true_logits  # sigmoid(overconfident / 2) is the true probability
    temperature = metrics.fit_temperature(overconfident, y)
    assert temperature == pytest.approx(2.0, rel=0.10)
    assert type(temperature) is float
    # Calibrating must lower the NLL relative to the raw logits.
    assert metrics._binary_nll(overconfident / temperature, y) < metrics._binary_nll(overconfident, y)


def test_apply_temperature():
    probs = metrics.apply_temperature([0.0, 2.0, -4.0], 2.0)
    np.testing.assert_allclose(probs, expit([0.0, 1.0, -2.0]))
    with pytest.raises(ValueError, match="positive"):
        metrics.apply_temperature([0.0], 0.0)


def test_fit_temperature_length_mismatch():
    with pytest.raises(ValueError, match="3 logits but 2 labels"):
        metrics.fit_temperature([0.1, 0.2, 0.3], [0, 1])


# --- summary ------------------------------------------------------------------------------


def test_binary_summary_shape_and_json():
    y, p = _synthetic(300, seed=9)
    s = metrics.binary_summary(y, p, threshold=0.5, n_boot=100, seed=0)
    assert set(s) == {"n", "n_abnormal", "auroc", "auroc_ci", "at_threshold", "roc", "calibration"}
    assert s["n"] == 300
    assert s["n_abnormal"] == int(np.sum(y))
    assert s["auroc"] == pytest.approx(metrics.auroc(y, p))
    lo, hi = s["auroc_ci"]
    assert lo <= s["auroc"] <= hi
    assert s["at_threshold"] == metrics.threshold_metrics(y, p, 0.5)
    assert s["roc"] == metrics.roc_points(y, p)
    assert s["calibration"]["ece"] == pytest.approx(metrics.expected_calibration_error(y, p))
    assert len(s["calibration"]["bins"]) == metrics.DEFAULT_N_BINS
    _assert_plain_json(s)
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_platt_scaling_corrects_a_shifted_base_rate():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, 20_000)
    y = (rng.random(true_logits.size) < 1 / (1 + np.exp(-true_logits))).astype(int)
    shifted = 0.5 * true_logits + 1.5  # under-confident and biased, like class-weighted training
    slope, intercept = metrics.fit_platt(shifted, y)
    assert slope == pytest.approx(2.0, rel=0.1) and intercept == pytest.approx(-3.0, abs=0.3)
    before = metrics.expected_calibration_error(y, metrics.apply_platt(shifted, 1.0, 0.0))
    after = metrics.expected_calibration_error(y, metrics.apply_platt(shifted, slope, intercept))
    assert after < 0.02 < before
