"""Binary classification metrics for the model card and the dashboard.

Every public function returns plain Python values (float, int, list, dict, None) so that
results can go straight into ``card.json``; undefined ratios are ``None``, never NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from scipy.stats import rankdata
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score, roc_auc_score, roc_curve

ArrayLike = Sequence[float] | np.ndarray

DEFAULT_ROC_POINTS = 200
DEFAULT_N_BOOT = 1000
DEFAULT_ALPHA = 0.05
DEFAULT_N_BINS = 10
THRESHOLD_METHODS = ("youden", "sensitivity")
# Search log T over [e^-5, e^5] ≈ [0.0067, 148]: far wider than any temperature a sane model needs.
LOG_T_BOUNDS = (-5.0, 5.0)
LOG_T_TOLERANCE = 1e-6


def _as_labels(y: ArrayLike) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (abnormal)")
    return arr.astype(np.int64)


def _as_scores(p: ArrayLike, name: str = "probabilities") -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite numbers")
    return arr


def _labels_and_probs(y: ArrayLike, p: ArrayLike, *, need_both_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = _as_labels(y), _as_scores(p)
    if labels.shape != probs.shape:
        raise ValueError(f"got {labels.size} labels but {probs.size} probabilities")
    if labels.size == 0:
        raise ValueError("no samples: labels and probabilities are empty")
    if ((probs < 0) | (probs > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    if need_both_classes and np.unique(labels).size < 2:
        raise ValueError("both classes (normal and abnormal) are needed for ROC-based metrics")
    return labels, probs


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def roc_points(y: ArrayLike, p: ArrayLike, max_points: int = DEFAULT_ROC_POINTS) -> dict[str, list[float]]:
    """ROC curve as ``{"fpr", "tpr", "thresholds"}`` lists, thinned to ``max_points``.

    The first threshold (``+inf`` in scikit-learn, "predict nothing positive") becomes 1.0
    so that the dict is valid JSON.
    """
    if max_points < 2:
        raise ValueError("max_points must be at least 2 (the curve's two end points)")
    labels, probs = _labels_and_probs(y, p, need_both_classes=True)
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=True)
    thresholds = np.where(np.isinf(thresholds), 1.0, thresholds)
    if fpr.size > max_points:
        # Evenly spaced indices always include 0 and n-1, so both end points survive.
        keep = np.unique(np.round(np.linspace(0, fpr.size - 1, max_points)).astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "thresholds": [float(v) for v in thresholds],
    }


def auroc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve."""
    labels, probs = _labels_and_probs(y, p, need_both_classes=True)
    return float(roc_auc_score(labels, probs))


def _fast_auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    # Mann–Whitney U with mid-ranks equals roc_auc_score (ties count ½) and is much cheaper
    # inside a 1000-resample loop than sklearn's validated path.
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    ranks = rankdata(probs)
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ci(
    y: ArrayLike,
    p: ArrayLike,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC with a percentile bootstrap interval: ``(point, lower, upper)``.

    Resamples that contain only one class are skipped (AUROC is undefined for them).
    """
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie strictly between 0 and 1")
    labels, probs = _labels_and_probs(y, p, need_both_classes=True)
    point = float(roc_auc_score(labels, probs))
    rng = np.random.default_rng(seed)
    n = labels.size
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        sample_labels = labels[idx]
        n_pos = int(sample_labels.sum())
        if n_pos == 0 or n_pos == n:
            continue
        stats.append(_fast_auroc(sample_labels, probs[idx]))
    if not stats:
        raise ValueError("every bootstrap resample held a single class; too few samples for an interval")
    lower, upper = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(lower), float(upper)


def threshold_metrics(y: ArrayLike, p: ArrayLike, threshold: float) -> dict[str, Any]:
    """Confusion counts and derived ratios when ``p >= threshold`` is called abnormal."""
    labels, probs = _labels_and_probs(y, p, need_both_classes=False)
    pred = (probs >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (labels == 1)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    # κ is undefined when both raters use one label only; sklearn would return NaN and warn.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        kappa = float(cohen_kappa_score(labels, pred, labels=[0, 1], replace_undefined_by=np.nan))
    return {
        "threshold": float(threshold),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "kappa": kappa if math.isfinite(kappa) else None,
        "accuracy": (tp + tn) / labels.size,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def choose_threshold(
    y: ArrayLike,
    p: ArrayLike,
    method: str = "youden",
    target_sensitivity: float | None = None,
    *,
    split: str = "val",
) -> tuple[float, str]:
    """Pick a decision threshold on ``split`` data; returns ``(threshold, how it was chosen)``.

    ``"youden"`` maximises J = sensitivity + specificity − 1 (ties: the highest threshold);
    ``"sensitivity"`` takes the highest threshold whose sensitivity ≥ ``target_sensitivity``.
    The threshold is one of the scores, so ``p >= threshold`` reproduces the chosen point.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; expected one of {THRESHOLD_METHODS}")
    labels, probs = _labels_and_probs(y, p, need_both_classes=True)
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    # Index 0 is sklearn's +inf "nothing positive" point, which is never a usable threshold.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if method == "youden":
        if target_sensitivity is not None:
            raise ValueError("target_sensitivity is only used with method='sensitivity'")
        j = tpr - fpr
        best = int(np.argmax(j))  # thresholds are decreasing, so the first maximum is the highest
        return float(thresholds[best]), f"Youden J on {split} (J={j[best]:.3f})"
    if target_sensitivity is None or not 0 < target_sensitivity <= 1:
        raise ValueError("method='sensitivity' needs target_sensitivity in (0, 1]")
    # tpr reaches 1.0 at the lowest score, so a qualifying index always exists.
    first = int(np.argmax(tpr >= target_sensitivity))
    return float(thresholds[first]), f"sensitivity ≥ {target_sensitivity:.2f} on {split}"


def calibration_bins(y: ArrayLike, p: ArrayLike, n_bins: int = DEFAULT_N_BINS) -> list[dict[str, Any]]:
    """Equal-width bins over [0, 1] (each ``[lo, hi)``, the last one closed).

    Each bin: ``{"lo", "hi", "count", "mean_predicted", "fraction_positive"}``; the means are
    ``None`` for empty bins.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    labels, probs = _labels_and_probs(y, p, need_both_classes=False)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Digitising against the inner edges keeps bin membership consistent with the reported lo/hi.
    which = np.digitize(probs, edges[1:-1], right=False)
    bins = []
    for i in range(n_bins):
        mask = which == i
        count = int(mask.sum())
        bins.append(
            {
                "lo": float(edges[i]),
                "hi": float(edges[i + 1]),
                "count": count,
                "mean_predicted": float(probs[mask].mean()) if count else None,
                "fraction_positive": float(labels[mask].mean()) if count else None,
            }
        )
    return bins


def _ece_from_bins(bins: list[dict[str, Any]]) -> float:
    total = sum(b["count"] for b in bins)
    return float(
        sum(b["count"] / total * abs(b["fraction_positive"] - b["mean_predicted"]) for b in bins if b["count"])
    )


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = DEFAULT_N_BINS) -> float:
    """Count-weighted mean of |fraction positive − mean predicted| over the calibration bins."""
    return _ece_from_bins(calibration_bins(y, p, n_bins))


def _binary_nll(logits: np.ndarray, labels: np.ndarray) -> float:
    # softplus(z) − y·z is −log-likelihood of sigmoid(z) without overflow for large |z|.
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def fit_temperature(logits: ArrayLike, y: ArrayLike) -> float:
    """Temperature ``T > 0`` minimising the binary NLL of ``sigmoid(logits / T)``."""
    z = _as_scores(logits, "logits")
    labels = _as_labels(y)
    if z.shape != labels.shape:
        raise ValueError(f"got {z.size} logits but {labels.size} labels")
    if z.size == 0:
        raise ValueError("no samples: logits and labels are empty")
    # Optimising log T keeps T positive and makes the search symmetric in "sharpen" vs "soften".
    result = minimize_scalar(
        lambda log_t: _binary_nll(z / math.exp(log_t), labels),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": LOG_T_TOLERANCE},
    )
    return float(math.exp(result.x))


def apply_temperature(logits: ArrayLike, temperature: float) -> np.ndarray:
    """Probabilities ``sigmoid(logits / temperature)``."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError("temperature must be a positive finite number")
    return expit(np.asarray(logits, dtype=np.float64) / temperature)


def fit_platt(logits: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Platt scaling: ``(slope, intercept)`` minimising the NLL of sigmoid(slope·logit + intercept).

    Unlike a temperature it also corrects a shifted base rate (e.g. from class-weighted training).
    """
    from sklearn.linear_model import LogisticRegression

    labels = _as_labels(y)
    z = _as_scores(logits, "logits")
    if labels.shape != z.shape or np.unique(labels).size < 2:
        raise ValueError("Platt scaling needs one logit per label and both classes")
    model = LogisticRegression(C=1e6, max_iter=1000).fit(z[:, None], labels)  # ~unregularised
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def apply_platt(logits: ArrayLike, slope: float, intercept: float) -> np.ndarray:
    """Probabilities ``sigmoid(slope · logits + intercept)``."""
    return expit(slope * np.asarray(logits, dtype=np.float64) + intercept)


def binary_summary(
    y: ArrayLike,
    p: ArrayLike,
    threshold: float,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the model card stores for one evaluation level (image or study)."""
    labels, probs = _labels_and_probs(y, p, need_both_classes=True)
    point, lower, upper = auroc_ci(labels, probs, n_boot=n_boot, seed=seed)
    bins = calibration_bins(labels, probs)
    return {
        "n": int(labels.size),
        "n_abnormal": int(labels.sum()),
        "auroc": point,
        "auroc_ci": [lower, upper],
        "at_threshold": threshold_metrics(labels, probs, threshold),
        "roc": roc_points(labels, probs),
        "calibration": {"bins": bins, "ece": _ece_from_bins(bins)},
    }
