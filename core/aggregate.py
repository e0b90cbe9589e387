"""Combine per-image probabilities into one study-level decision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

AGGREGATES = ("mean", "max")
DECISION_ABNORMAL = "abnormal"
DECISION_NORMAL = "normal"


@dataclass(frozen=True)
class StudyResult:
    """A study's score, its decision and how much each image contributed to the score."""

    probability: float
    decision: str
    method: str
    threshold: float
    shares: tuple[float, ...]


def _check_unit(value: float, what: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be a finite number in [0, 1], got {value!r}")
    return value


def aggregate_study(probabilities: Sequence[float], threshold: float, method: str = "mean") -> StudyResult:
    """Study probability by ``mean`` (the MURA protocol) or ``max`` of image probabilities.

    The study is ``"abnormal"`` iff its probability ≥ ``threshold``. ``shares`` says how much
    each image contributed: ``p_i / Σp`` for mean (equal if every p is 0), and 1.0 for the
    first highest-scoring image under max.
    """
    if method not in AGGREGATES:
        raise ValueError(f"unknown aggregation method {method!r}; expected one of {AGGREGATES}")
    probs = [_check_unit(p, f"image probability #{i + 1}") for i, p in enumerate(probabilities)]
    if not probs:
        raise ValueError("a study needs at least one image probability")
    threshold = _check_unit(threshold, "threshold")
    n = len(probs)

    if method == "mean":
        # fsum keeps the mean of many near-equal floats from drifting below an exact threshold.
        total = math.fsum(probs)
        probability = total / n
        shares = tuple(p / total for p in probs) if total > 0 else tuple(1.0 / n for _ in probs)
    else:
        probability = max(probs)
        top = probs.index(probability)  # first argmax: one image takes the credit, deterministically
        shares = tuple(1.0 if i == top else 0.0 for i in range(n))

    decision = DECISION_ABNORMAL if probability >= threshold else DECISION_NORMAL
    return StudyResult(probability=probability, decision=decision, method=method, threshold=threshold, shares=shares)
