"""Plotly figure builders for the dashboard.

Pure functions: they read the metric dicts stored in the model card (see
``core.metrics.binary_summary``) and return ``plotly.graph_objects.Figure``; nothing here
recomputes metrics from raw data or touches Streamlit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

TEMPLATE = "plotly_white"
FONT = {"family": "Inter, Segoe UI, Helvetica, Arial, sans-serif", "size": 14, "color": "#1f2933"}
MARGIN = {"l": 60, "r": 20, "t": 60, "b": 55}
COMPACT_MARGIN = {"l": 20, "r": 20, "t": 30, "b": 30}  # room for the threshold label above the bar

SQUARE_HEIGHT = 440
CONFUSION_HEIGHT = 380
GAUGE_HEIGHT = 150
SHARES_ROW_HEIGHT = 34
SHARES_MIN_HEIGHT = 180

COLOUR_CURVE = "#1f4e79"
COLOUR_REFERENCE = "#9aa5b1"
COLOUR_OPERATING = "#c0392b"
COLOUR_EXPLORE = "#e67e22"
COLOUR_BEFORE = "#9aa5b1"
COLOUR_ABNORMAL = "#c0392b"
COLOUR_NORMAL = "#2e7d32"
CONFUSION_SCALE = "Blues"

MARKER_SIZE = 12
# Reliability markers scale with √count between these sizes so that a bin with 100×
# the samples looks 10× wider, not 100×.
BIN_MARKER_MIN = 6
BIN_MARKER_MAX = 26

NAME_ROC = "ROC curve"
NAME_CHANCE = "Chance"
NAME_OPERATING = "Operating point"
NAME_EXPLORE = "Explored threshold"
NAME_PERFECT = "Perfect calibration"


def _layout(fig: go.Figure, *, title: str | None, height: int, margin: dict[str, int] = MARGIN, **kwargs: Any) -> None:
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.0, "xanchor": "left"} if title else None,
        font=FONT,
        height=height,
        margin=margin,
        paper_bgcolor="white",
        plot_bgcolor="white",
        **kwargs,
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _check_unit(value: float, what: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be a finite number in [0, 1], got {value!r}")
    return value


def _roc_arrays(roc: dict[str, list[float]]) -> tuple[list[float], list[float], list[float]]:
    fpr, tpr, thresholds = (list(roc[k]) for k in ("fpr", "tpr", "thresholds"))
    if not fpr or not len(fpr) == len(tpr) == len(thresholds):
        raise ValueError("roc needs non-empty 'fpr', 'tpr' and 'thresholds' lists of equal length")
    return fpr, tpr, thresholds


def explore_threshold(roc: dict[str, list[float]], threshold: float) -> dict[str, float]:
    """Sensitivity/specificity at the stored ROC point nearest at or above ``threshold``.

    Uses only the stored (possibly thinned) points, so the answer is the operating point
    that was actually measured; ``"threshold"`` is that point's threshold.
    """
    threshold = _check_unit(threshold, "threshold")
    fpr, tpr, thresholds = _roc_arrays(roc)
    thr = np.asarray(thresholds, dtype=np.float64)
    above = np.flatnonzero(thr >= threshold)
    if above.size:
        nearest = thr[above].min()
        # With a score of exactly 1.0 the stored "nothing positive" point also reads 1.0; the
        # later (higher-tpr) point is the one that p >= 1.0 really produces.
        idx = int(above[thr[above] == nearest][-1])
    else:
        idx = int(np.argmax(thr))  # beyond every stored point: the most conservative one
    return {
        "threshold": float(thr[idx]),
        "sensitivity": float(tpr[idx]),
        "specificity": 1.0 - float(fpr[idx]),
        "fpr": float(fpr[idx]),
    }


def roc_figure(
    roc: dict[str, list[float]],
    auroc: float,
    auroc_ci: list[float] | tuple[float, float],
    operating: dict[str, Any],
    explore: dict[str, Any] | None = None,
) -> go.Figure:
    """ROC curve with chance diagonal, the model's operating point and an optional explored point."""
    fpr, tpr, thresholds = _roc_arrays(roc)
    lower, upper = auroc_ci
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0.0, 1.0],
            y=[0.0, 1.0],
            mode="lines",
            name=NAME_CHANCE,
            line={"color": COLOUR_REFERENCE, "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=fpr,
            y=tpr,
            customdata=thresholds,
            mode="lines",
            name=NAME_ROC,
            line={"color": COLOUR_CURVE, "width": 2.5},
            hovertemplate="threshold %{customdata:.3f}<br>sensitivity %{y:.3f}<br>1 − specificity %{x:.3f}<extra></extra>",
        )
    )
    # A point is only drawable where both ratios are defined (both classes present).
    if operating.get("sensitivity") is not None and operating.get("specificity") is not None:
        t = operating["threshold"]
        fig.add_trace(
            go.Scatter(
                x=[1.0 - operating["specificity"]],
                y=[operating["sensitivity"]],
                mode="markers+text",
                name=f"{NAME_OPERATING} (t = {t:.2f})",
                text=[f"t = {t:.2f}"],
                textposition="bottom right",
                marker={"color": COLOUR_OPERATING, "size": MARKER_SIZE, "symbol": "circle"},
                hovertemplate=(
                    f"operating threshold {t:.3f}<br>sensitivity %{{y:.3f}}<br>"
                    f"specificity {operating['specificity']:.3f}<extra></extra>"
                ),
            )
        )
    if explore is not None:
        t = explore["threshold"]
        fig.add_trace(
            go.Scatter(
                # Stored fpr is exact; 1 − (1 − fpr) can be off by one ulp.
                x=[explore["fpr"] if "fpr" in explore else 1.0 - explore["specificity"]],
                y=[explore["sensitivity"]],
                mode="markers+text",
                name=f"{NAME_EXPLORE} (t = {t:.2f})",
                text=[f"t = {t:.2f}"],
                textposition="top left",
                marker={"color": COLOUR_EXPLORE, "size": MARKER_SIZE, "symbol": "diamond"},
                hovertemplate=(
                    f"explored threshold {t:.3f}<br>sensitivity %{{y:.3f}}<br>"
                    f"specificity {explore['specificity']:.3f}<extra></extra>"
                ),
            )
        )
    _layout(
        fig,
        title=f"ROC — AUROC {auroc:.3f} (95% CI {lower:.3f}–{upper:.3f})",
        height=SQUARE_HEIGHT,
        legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom", "bgcolor": "rgba(255,255,255,0.8)"},
    )
    fig.update_xaxes(title_text="1 − specificity (false-positive rate)", range=[0, 1], constrain="domain")
    fig.update_yaxes(title_text="Sensitivity (true-positive rate)", range=[0, 1.02], scaleanchor="x", scaleratio=1)
    return fig


def confusion_figure(at_threshold: dict[str, Any]) -> go.Figure:
    """2×2 confusion matrix: rows true label, columns predicted label, cells annotated with counts."""
    tn, fp, fn, tp = (int(at_threshold[k]) for k in ("tn", "fp", "fn", "tp"))
    z = [[tn, fp], [fn, tp]]
    row_totals = [tn + fp, fn + tp]
    # Row percentages read directly as specificity / miss rate and false-alarm rate / sensitivity.
    text = [
        [f"{count}<br>({count / row_totals[r]:.0%} of row)" if row_totals[r] else f"{count}" for count in row]
        for r, row in enumerate(z)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=["Predicted normal", "Predicted abnormal"],
            y=["True normal", "True abnormal"],
            text=text,
            texttemplate="%{text}",
            textfont={"size": 16},
            colorscale=CONFUSION_SCALE,
            showscale=False,
            xgap=2,
            ygap=2,
            hovertemplate="%{y} · %{x}: %{z}<extra></extra>",
        )
    )
    threshold = at_threshold.get("threshold")
    title = "Confusion matrix" if threshold is None else f"Confusion matrix at threshold {threshold:.2f}"
    _layout(fig, title=title, height=CONFUSION_HEIGHT)
    # Put "True normal" on top, as confusion matrices are conventionally read.
    fig.update_yaxes(autorange="reversed", title_text="True label")
    fig.update_xaxes(title_text="Predicted label", side="bottom")
    return fig


def _bin_points(bins: list[dict[str, Any]]) -> tuple[list[float], list[float], list[int]]:
    filled = [b for b in bins if b["count"]]
    return (
        [b["mean_predicted"] for b in filled],
        [b["fraction_positive"] for b in filled],
        [int(b["count"]) for b in filled],
    )


def _marker_sizes(counts: list[int], largest: int) -> list[float]:
    if largest <= 0:
        return []
    return [BIN_MARKER_MIN + (BIN_MARKER_MAX - BIN_MARKER_MIN) * math.sqrt(c / largest) for c in counts]


def reliability_figure(
    bins: list[dict[str, Any]],
    ece: float,
    bins_before: list[dict[str, Any]] | None = None,
    ece_before: float | None = None,
) -> go.Figure:
    """Reliability diagram: mean predicted vs fraction abnormal per bin, marker area ∝ count.

    Pass both ``bins_before`` and ``ece_before`` to overlay the uncalibrated model.
    """
    if (bins_before is None) != (ece_before is None):
        raise ValueError("pass both bins_before and ece_before, or neither")
    x, y, counts = _bin_points(bins)
    largest = max(counts, default=0)
    before = None
    if bins_before is not None:
        before = _bin_points(bins_before)
        largest = max(largest, *before[2], 0)

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0.0, 1.0],
            y=[0.0, 1.0],
            mode="lines",
            name=NAME_PERFECT,
            line={"color": COLOUR_REFERENCE, "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    hover = "mean predicted %{x:.3f}<br>fraction abnormal %{y:.3f}<br>n = %{customdata}<extra></extra>"
    if before is not None:
        bx, by, bcounts = before
        fig.add_trace(
            go.Scatter(
                x=bx,
                y=by,
                customdata=bcounts,
                mode="lines+markers",
                name=f"Before calibration (ECE {ece_before:.3f})",
                line={"color": COLOUR_BEFORE, "width": 1.5},
                marker={"color": COLOUR_BEFORE, "size": _marker_sizes(bcounts, largest), "symbol": "square"},
                hovertemplate=hover,
            )
        )
    label = "After calibration" if before is not None else "Model"
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            customdata=counts,
            mode="lines+markers",
            name=f"{label} (ECE {ece:.3f})",
            line={"color": COLOUR_CURVE, "width": 2},
            marker={"color": COLOUR_CURVE, "size": _marker_sizes(counts, largest)},
            hovertemplate=hover,
        )
    )
    _layout(
        fig,
        title=f"Reliability — ECE {ece:.3f}",
        height=SQUARE_HEIGHT,
        legend={"x": 0.02, "y": 0.98, "xanchor": "left", "yanchor": "top", "bgcolor": "rgba(255,255,255,0.8)"},
    )
    fig.update_xaxes(title_text="Mean predicted probability", range=[0, 1], constrain="domain")
    fig.update_yaxes(title_text="Fraction abnormal", range=[0, 1.02], scaleanchor="x", scaleratio=1)
    return fig


def score_gauge_figure(probability: float, threshold: float) -> go.Figure:
    """Compact horizontal bar of a probability on [0, 1] with the decision threshold marked."""
    probability = _check_unit(probability, "probability")
    threshold = _check_unit(threshold, "threshold")
    abnormal = probability >= threshold
    fig = go.Figure(
        go.Bar(
            x=[probability],
            y=["score"],
            orientation="h",
            marker={"color": COLOUR_ABNORMAL if abnormal else COLOUR_NORMAL},
            text=[f"{probability:.2f}"],
            textposition="outside" if probability < 0.85 else "inside",
            hovertemplate="probability %{x:.3f}<extra></extra>",
            width=0.5,
        )
    )
    fig.add_vline(
        x=threshold,
        line={"color": "#1f2933", "width": 2, "dash": "dot"},
        annotation_text=f"threshold {threshold:.2f}",
        annotation_position="top",
    )
    _layout(fig, title=None, height=GAUGE_HEIGHT, margin=COMPACT_MARGIN, showlegend=False)
    fig.update_xaxes(range=[0, 1], tickformat=".1f", dtick=0.1, title_text=None, showgrid=True)
    fig.update_yaxes(visible=False)
    return fig


def _unique_labels(names: list[str]) -> list[str]:
    # Plotly merges equal category labels into one bar, so repeated file names get a suffix.
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels


def shares_figure(names: list[str], shares: list[float], probabilities: list[float]) -> go.Figure:
    """Horizontal bars of each image's share of the study score, first image on top."""
    if not len(names) == len(shares) == len(probabilities):
        raise ValueError("names, shares and probabilities must have the same length")
    labels = _unique_labels([str(n) for n in names])
    fig = go.Figure(
        go.Bar(
            x=list(shares),
            y=labels,
            orientation="h",
            customdata=list(probabilities),
            text=[f"{s:.0%} · p = {p:.2f}" for s, p in zip(shares, probabilities, strict=True)],
            textposition="auto",
            marker={"color": COLOUR_CURVE},
            hovertemplate="%{y}<br>share %{x:.1%}<br>image probability %{customdata:.3f}<extra></extra>",
        )
    )
    height = max(SHARES_MIN_HEIGHT, MARGIN["t"] + MARGIN["b"] + SHARES_ROW_HEIGHT * len(labels))
    _layout(fig, title="Each image's share of the study score", height=height, showlegend=False)
    fig.update_xaxes(title_text="Share of study score", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(autorange="reversed", title_text=None, automargin=True)
    return fig
