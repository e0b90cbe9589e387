"""Study-level aggregation arithmetic."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.aggregate import AGGREGATES, StudyResult, aggregate_study

unit_floats = st.floats(0.0, 1.0, allow_nan=False)


def test_aggregates_constant():
    assert AGGREGATES == ("mean", "max")


def test_mean_is_the_default_and_shares_are_proportional():
    r = aggregate_study([0.2, 0.6], threshold=0.5)
    assert r.method == "mean"
    assert r.probability == pytest.approx(0.4)
    assert r.decision == "normal"
    assert r.threshold == 0.5
    assert r.shares == pytest.approx((0.25, 0.75))


def test_max_takes_the_first_argmax():
    r = aggregate_study([0.2, 0.9, 0.9, 0.1], threshold=0.5, method="max")
    assert r.probability == 0.9
    assert r.decision == "abnormal"
    assert r.shares == (0.0, 1.0, 0.0, 0.0)


def test_decision_at_threshold_edge_is_abnormal():
    # (0.2 + 0.6) / 2 is exactly 0.4 in binary floating point.
    assert aggregate_study([0.2, 0.6], threshold=0.4).decision == "abnormal"
    assert aggregate_study([0.2, 0.6], threshold=0.4000001).decision == "normal"
    assert aggregate_study([0.7], threshold=0.7, method="max").decision == "abnormal"


def test_all_zero_mean_shares_are_equal():
    r = aggregate_study([0.0, 0.0, 0.0, 0.0], threshold=0.5)
    assert r.probability == 0.0
    assert r.shares == (0.25, 0.25, 0.25, 0.25)
    assert r.decision == "normal"


def test_single_image():
    for method in AGGREGATES:
        r = aggregate_study([0.3], threshold=0.5, method=method)
        assert r.probability == 0.3
        assert r.shares == (1.0,)


def test_accepts_any_sequence_of_numbers():
    r = aggregate_study((0.5, 1), threshold=0.5)
    assert r.probability == 0.75
    assert type(r.probability) is float


def test_result_is_frozen():
    r = aggregate_study([0.5], threshold=0.5)
    assert isinstance(r, StudyResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.probability = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("probabilities", "threshold", "method", "match"),
    [
        ([], 0.5, "mean", "at least one image"),
        ([0.5], 0.5, "median", "unknown aggregation method 'median'"),
        ([0.5, 1.2], 0.5, "mean", r"image probability #2 .*\[0, 1\]"),
        ([-0.1], 0.5, "max", r"image probability #1"),
        ([float("nan")], 0.5, "mean", "finite"),
        ([float("inf")], 0.5, "mean", "finite"),
        ([0.5], 1.5, "mean", "threshold"),
        ([0.5], float("nan"), "mean", "threshold"),
    ],
)
def test_errors(probabilities, threshold, method, match):
    with pytest.raises(ValueError, match=match):
        aggregate_study(probabilities, threshold, method)


@given(st.lists(unit_floats, min_size=1, max_size=30), unit_floats, st.sampled_from(AGGREGATES))
def test_properties(probabilities, threshold, method):
    r = aggregate_study(probabilities, threshold, method)
    assert len(r.shares) == len(probabilities)
    assert math.fsum(r.shares) == pytest.approx(1.0)
    assert all(0.0 <= s <= 1.0 for s in r.shares)
    assert min(probabilities) - 1e-12 <= r.probability <= max(probabilities) + 1e-12
    assert r.decision == ("abnormal" if r.probability >= threshold else "normal")
    if method == "max":
        assert r.probability == max(probabilities)
