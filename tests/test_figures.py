"""Dashboard figure builders: the traces carry exactly the stored metric data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from scipy.special import expit

from core import metrics
from dashboard import figures

# ROC of y=[0,0,1,1], p=[.1,.4,.35,.8] as core.metrics.roc_points stores it.
ROC4 = {
    "fpr": [0.0, 0.0, 0.5, 0.5, 1.0],
    "tpr": [0.0, 0.5, 0.5, 1.0, 1.0],
    "thresholds": [1.0, 0.8, 0.4, 0.35, 0.1],
}


@pytest.fixture(scope="module")
def summary() -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = expit(rng.normal(2 * y - 1, 1.2))
    return metrics.binary_summary(y, p, threshold=0.5, n_boot=100, seed=0)


def _trace(fig: go.Figure, name_prefix: str):
    matches = [t for t in fig.data if t.name and t.name.startswith(name_prefix)]
    assert len(matches) == 1, [t.name for t in fig.data]
    return matches[0]


def _round_trips(fig: go.Figure) -> dict:
    return json.loads(fig.to_json())


# --- explore_threshold --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.8, (0.8, 0.5, 1.0)),  # exact stored threshold
        (0.5, (0.8, 0.5, 1.0)),  # nearest at or above 0.5 is 0.8
        (0.36, (0.4, 0.5, 0.5)),
        (0.35, (0.35, 1.0, 0.5)),
        (0.0, (0.1, 1.0, 0.0)),
        (1.0, (1.0, 0.0, 1.0)),
    ],
)
def test_explore_threshold_picks_nearest_at_or_above(threshold, expected):
    e = figures.explore_threshold(ROC4, threshold)
    assert (e["threshold"], e["sensitivity"], e["specificity"]) == pytest.approx(expected)
    assert e["fpr"] == pytest.approx(1.0 - expected[2])
    assert set(e) == {"threshold", "sensitivity", "specificity", "fpr"}


def test_explore_threshold_with_a_score_of_exactly_one():
    # sklearn's inf → 1.0 and a real score 1.0 share a threshold; p >= 1.0 gives the second point.
    roc = {"fpr": [0.0, 0.0, 1.0], "tpr": [0.0, 0.5, 1.0], "thresholds": [1.0, 1.0, 0.2]}
    assert figures.explore_threshold(roc, 1.0)["sensitivity"] == 0.5


def test_explore_threshold_agrees_with_threshold_metrics():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 150)
    p = np.round(expit(rng.normal(y, 1.0)), 3)
    roc = metrics.roc_points(y, p, max_points=10_000)
    for t in roc["thresholds"][1:]:
        e = figures.explore_threshold(roc, t)
        m = metrics.threshold_metrics(y, p, t)
        assert e["sensitivity"] == pytest.approx(m["sensitivity"])
        assert e["specificity"] == pytest.approx(m["specificity"])


def test_explore_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        figures.explore_threshold(ROC4, 1.5)
    with pytest.raises(ValueError, match="equal length"):
        figures.explore_threshold({"fpr": [0.0], "tpr": [], "thresholds": [1.0]}, 0.5)


# --- ROC ----------------------------------------------------------------------------------


def test_roc_figure_holds_stored_curve_and_operating_point(summary):
    op = summary["at_threshold"]
    fig = figures.roc_figure(summary["roc"], summary["auroc"], summary["auroc_ci"], op)
    curve = _trace(fig, figures.NAME_ROC)
    assert list(curve.x) == summary["roc"]["fpr"]
    assert list(curve.y) == summary["roc"]["tpr"]
    assert list(curve.customdata) == summary["roc"]["thresholds"]
    chance = _trace(fig, figures.NAME_CHANCE)
    assert list(chance.x) == list(chance.y) == [0.0, 1.0]
    point = _trace(fig, figures.NAME_OPERATING)
    assert point.x == pytest.approx((1.0 - op["specificity"],))
    assert point.y == pytest.approx((op["sensitivity"],))
    assert "t = 0.50" in point.text[0]
    assert not [t for t in fig.data if t.name.startswith(figures.NAME_EXPLORE)]
    lo, hi = summary["auroc_ci"]
    title = fig.layout.title.text
    assert f"AUROC {summary['auroc']:.3f}" in title
    assert f"{lo:.3f}–{hi:.3f}" in title
    assert fig.layout.height == figures.SQUARE_HEIGHT
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    _round_trips(fig)


def test_roc_figure_explored_point():
    op = metrics.threshold_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.35)
    explore = figures.explore_threshold(ROC4, 0.5)
    fig = figures.roc_figure(ROC4, 0.75, [0.5, 1.0], op, explore)
    assert _trace(fig, figures.NAME_OPERATING).x == (0.5,)
    assert _trace(fig, figures.NAME_OPERATING).y == (1.0,)
    marker = _trace(fig, figures.NAME_EXPLORE)
    assert marker.x == (0.0,)
    assert marker.y == (0.5,)
    assert "t = 0.80" in marker.name
    assert "AUROC 0.750 (95% CI 0.500–1.000)" in fig.layout.title.text
    _round_trips(fig)


def test_roc_figure_skips_undefined_operating_point():
    op = metrics.threshold_metrics([0, 0], [0.1, 0.2], 0.5)  # no abnormal cases: sensitivity None
    fig = figures.roc_figure(ROC4, 0.75, (0.5, 1.0), op)
    assert not [t for t in fig.data if t.name.startswith(figures.NAME_OPERATING)]
    _round_trips(fig)


# --- confusion matrix ---------------------------------------------------------------------


def test_confusion_counts_in_z():
    at = {"threshold": 0.42, "tn": 50, "fp": 7, "fn": 3, "tp": 40}
    fig = figures.confusion_figure(at)
    heat = fig.data[0]
    assert [list(row) for row in heat.z] == [[50, 7], [3, 40]]
    assert list(heat.y) == ["True normal", "True abnormal"]
    assert list(heat.x) == ["Predicted normal", "Predicted abnormal"]
    assert heat.text[0][0].startswith("50")
    assert heat.text[1][1].startswith("40")
    assert "0.42" in fig.layout.title.text
    assert fig.layout.yaxis.autorange == "reversed"
    assert _round_trips(fig)["data"][0]["z"] == [[50, 7], [3, 40]]


def test_confusion_from_threshold_metrics_handles_empty_rows():
    at = metrics.threshold_metrics([0, 0], [0.1, 0.9], 0.5)
    fig = figures.confusion_figure(at)
    assert [list(row) for row in fig.data[0].z] == [[1, 1], [0, 0]]
    assert fig.data[0].text[1][0] == "0"  # empty row: no percentage to divide by
    _round_trips(fig)


# --- reliability --------------------------------------------------------------------------


def test_reliability_holds_non_empty_bins(summary):
    bins = summary["calibration"]["bins"]
    ece = summary["calibration"]["ece"]
    fig = figures.reliability_figure(bins, ece)
    filled = [b for b in bins if b["count"]]
    model = _trace(fig, "Model")
    assert list(model.x) == [b["mean_predicted"] for b in filled]
    assert list(model.y) == [b["fraction_positive"] for b in filled]
    assert list(model.customdata) == [b["count"] for b in filled]
    assert f"ECE {ece:.3f}" in model.name
    assert f"ECE {ece:.3f}" in fig.layout.title.text
    assert _trace(fig, figures.NAME_PERFECT).x == (0.0, 1.0)
    _round_trips(fig)


def test_reliability_marker_size_grows_with_count():
    bins = [
        {"lo": 0.0, "hi": 0.5, "count": 4, "mean_predicted": 0.3, "fraction_positive": 0.25},
        {"lo": 0.5, "hi": 1.0, "count": 100, "mean_predicted": 0.8, "fraction_positive": 0.75},
    ]
    sizes = _trace(figures.reliability_figure(bins, 0.05), "Model").marker.size
    assert sizes[0] < sizes[1] == figures.BIN_MARKER_MAX


def test_reliability_before_and_after():
    before = [
        {"lo": 0.0, "hi": 0.5, "count": 10, "mean_predicted": 0.1, "fraction_positive": 0.3},
        {"lo": 0.5, "hi": 1.0, "count": 0, "mean_predicted": None, "fraction_positive": None},
    ]
    after = [
        {"lo": 0.0, "hi": 0.5, "count": 10, "mean_predicted": 0.28, "fraction_positive": 0.3},
        {"lo": 0.5, "hi": 1.0, "count": 0, "mean_predicted": None, "fraction_positive": None},
    ]
    fig = figures.reliability_figure(after, 0.02, bins_before=before, ece_before=0.2)
    b = _trace(fig, "Before calibration")
    a = _trace(fig, "After calibration")
    assert (b.x, b.y) == ((0.1,), (0.3,))
    assert (a.x, a.y) == ((0.28,), (0.3,))
    assert "ECE 0.200" in b.name
    assert "ECE 0.020" in a.name
    _round_trips(fig)
    with pytest.raises(ValueError, match="both"):
        figures.reliability_figure(after, 0.02, bins_before=before)


# --- score gauge and shares ---------------------------------------------------------------


@pytest.mark.parametrize(("probability", "colour"), [(0.73, figures.COLOUR_ABNORMAL), (0.2, figures.COLOUR_NORMAL)])
def test_score_gauge(probability, colour):
    fig = figures.score_gauge_figure(probability, 0.5)
    bar = fig.data[0]
    assert bar.x == (probability,)
    assert bar.orientation == "h"
    assert bar.marker.color == colour
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 1
    assert lines[0].x0 == lines[0].x1 == 0.5
    assert tuple(fig.layout.xaxis.range) == (0, 1)
    assert fig.layout.height == figures.GAUGE_HEIGHT
    _round_trips(fig)


def test_score_gauge_rejects_out_of_range():
    with pytest.raises(ValueError, match="probability"):
        figures.score_gauge_figure(1.2, 0.5)


def test_shares_figure_holds_data():
    fig = figures.shares_figure(["a.png", "b.dcm", "c.jpg"], [0.5, 0.3, 0.2], [0.9, 0.54, 0.36])
    bar = fig.data[0]
    assert list(bar.x) == [0.5, 0.3, 0.2]
    assert list(bar.y) == ["a.png", "b.dcm", "c.jpg"]
    assert list(bar.customdata) == [0.9, 0.54, 0.36]
    assert bar.text[0] == "50% · p = 0.90"
    assert fig.layout.yaxis.autorange == "reversed"
    _round_trips(fig)


def test_shares_figure_keeps_duplicate_names_apart():
    fig = figures.shares_figure(["x.png", "x.png"], [0.5, 0.5], [0.4, 0.4])
    assert list(fig.data[0].y) == ["x.png", "x.png (2)"]


def test_shares_figure_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        figures.shares_figure(["a"], [0.5, 0.5], [0.1, 0.1])


# --- look and purity ----------------------------------------------------------------------


def test_all_figures_use_the_clinical_template(summary):
    built = [
        figures.roc_figure(summary["roc"], summary["auroc"], summary["auroc_ci"], summary["at_threshold"]),
        figures.confusion_figure(summary["at_threshold"]),
        figures.reliability_figure(summary["calibration"]["bins"], summary["calibration"]["ece"]),
        figures.score_gauge_figure(0.6, 0.5),
        figures.shares_figure(["a"], [1.0], [0.6]),
    ]
    for fig in built:
        assert fig.layout.template.layout.plot_bgcolor == "white"
        assert fig.layout.plot_bgcolor == "white"
        assert fig.layout.height > 0
        assert fig.layout.margin.l is not None
        assert fig.layout.font.size == figures.FONT["size"]


def test_modules_import_neither_streamlit_nor_tensorflow():
    code = (
        "import sys, core.metrics, core.aggregate, dashboard.figures; "
        "bad = [m for m in ('streamlit', 'tensorflow') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    repo_root = Path(__file__).resolve().parents[1]  # `python -c` puts the cwd on sys.path
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=repo_root)
    assert result.returncode == 0, result.stderr or result.stdout
