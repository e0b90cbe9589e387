"""Input gate: is this a radiograph, and is it like the model's training data?

Three outcomes per image, decided before (pixel signals) and after (embedding novelty) the
forward pass:

- ``reject`` — not a radiograph: colour photographs and screenshots (saturation), blank or
  near-constant images (contrast), noise (no spatial correlation), documents and flat
  graphics (one intensity dominates), or a low learned radiograph score.
- ``warn`` — a radiograph unlike the training data (another body part, an unusual view): a
  middling radiograph score, a DICOM body part other than the training data's, or an
  embedding far (Mahalanobis, PCA subspace) from the training embeddings.
- ``ok`` — everything else.

The pixel rules are fixed, named constants; the radiograph score, the novelty model and
their thresholds are fitted per bundle (``training.gate``) and stored in ``gate.npz`` + card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

GATE_FILE = "gate.npz"
ANALYSIS_SIDE = 128
MAX_COLOURFULNESS = 0.08  # mean HSV saturation; grayscale radiographs are 0
MIN_CONTRAST = 0.03  # std of intensities in [0, 1]
MIN_NEIGHBOUR_CORRELATION = 0.5  # radiographs are smooth; noise is not
MAX_DOMINANT_FRACTION = 0.5  # share of pixels in the single most common of 64 intensity bins
HISTOGRAM_BINS = 64
# DICOM modalities that declare a projection radiograph: such a header outweighs a low
# radiograph score (which was fitted on one body part), so those images are warned, not rejected.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG", "DR"})
OK, WARN, REJECT = "ok", "warn", "reject"


@dataclass(frozen=True)
class GateResult:
    status: str
    reason: str
    signals: dict[str, float]

    def as_json(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}


def _analysis_view(pixels: np.ndarray) -> np.ndarray:
    image = Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F")
    scale = ANALYSIS_SIDE / max(image.size)
    if scale < 1:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX
        )
    return np.asarray(image, dtype=np.float64)


def pixel_signals(pixels: np.ndarray, colourfulness: float) -> dict[str, float]:
    """Cheap statistics of a decoded image (values in [0, 1])."""
    view = _analysis_view(pixels)
    contrast = float(view.std())
    if view.shape[1] > 1 and contrast > 0:
        left, right = view[:, :-1].ravel(), view[:, 1:].ravel()
        correlation = float(np.corrcoef(left, right)[0, 1]) if left.std() > 0 and right.std() > 0 else 0.0
    else:
        correlation = 0.0
    histogram, _ = np.histogram(view, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {
        "colourfulness": float(colourfulness),
        "contrast": contrast,
        "neighbour_correlation": correlation if np.isfinite(correlation) else 0.0,
        "dominant_fraction": float(histogram.max() / max(1, view.size)),
    }


def pixel_verdict(signals: dict[str, float]) -> GateResult:
    """Reject what is plainly not a radiograph; otherwise provisionally ok."""
    if signals["colourfulness"] > MAX_COLOURFULNESS:
        reason = f"colour image (saturation {signals['colourfulness']:.2f}): not a radiograph"
    elif signals["contrast"] < MIN_CONTRAST:
        reason = f"blank or near-constant image (contrast {signals['contrast']:.3f})"
    elif signals["neighbour_correlation"] < MIN_NEIGHBOUR_CORRELATION:
        reason = f"looks like noise, not a radiograph (neighbour correlation {signals['neighbour_correlation']:.2f})"
    elif signals["dominant_fraction"] > MAX_DOMINANT_FRACTION:
        reason = (
            f"looks like a document or graphic ({signals['dominant_fraction']:.0%} of pixels share one intensity), "
            "not a radiograph"
        )
    else:
        return GateResult(OK, "", signals)
    return GateResult(REJECT, reason, signals)


def radiograph_features(pixels: np.ndarray, colourfulness: float = 0.0) -> np.ndarray:
    """Intensity histogram, spatial correlation at 4 lags and gradient statistics (31 values)."""
    view = _analysis_view(pixels)
    histogram, _ = np.histogram(view, bins=16, range=(0.0, 1.0))
    features = [*(histogram / view.size), view.mean(), view.std(), colourfulness]
    for lag in (1, 2, 4, 8):
        correlation = 0.0
        if view.shape[1] > lag:
            a, b = view[:, :-lag].ravel(), view[:, lag:].ravel()
            if a.std() > 0 and b.std() > 0:
                correlation = float(np.corrcoef(a, b)[0, 1])
        features.append(correlation)
    gradients = np.concatenate([np.abs(np.diff(view, axis=1)).ravel(), np.abs(np.diff(view, axis=0)).ravel()])
    if gradients.size == 0:
        gradients = np.zeros(1)
    counts, _ = np.histogram(gradients, bins=GRADIENT_EDGES)
    features += [*(counts / gradients.size), float((gradients == 0).mean())]
    return np.nan_to_num(np.asarray(features, dtype=np.float64))


GRADIENT_EDGES = (0.0, 0.002, 0.01, 0.03, 0.06, 0.1, 0.2, 1.01)


@dataclass(frozen=True)
class FittedGate:
    """The per-bundle part of the gate, fitted by ``training.gate``.

    A logistic "radiograph-ness" score on :func:`radiograph_features` (reject below
    ``reject_below_``, warn below ``ok_above_``), and a Mahalanobis novelty of the model's
    embedding in a PCA subspace of the training embeddings (warn above ``warn_novelty_``).
    """

    feature_mean_: np.ndarray
    feature_scale_: np.ndarray
    coef_: np.ndarray
    intercept_: float
    ok_above_: float
    reject_below_: float
    mean_: np.ndarray
    components_: np.ndarray
    scales_: np.ndarray
    warn_novelty_: float

    def radiograph_score(self, features: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(features) - self.feature_mean_) / self.feature_scale_
        return 1.0 / (1.0 + np.exp(-(z @ self.coef_ + self.intercept_)))

    def novelty(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance in the PCA subspace, divided by sqrt(K) so typical values are ~1."""
        z = (np.atleast_2d(np.asarray(embeddings, dtype=np.float64)) - self.mean_) @ self.components_.T / self.scales_
        return np.sqrt((z**2).mean(axis=1))

    def verdict(
        self, score: float, novelty: float, signals: dict[str, float], declared_radiograph: bool = False
    ) -> GateResult:
        """``declared_radiograph``: a DICOM header names a radiography modality (CR, DX)."""
        signals = {**signals, "radiograph_score": float(score), "novelty": float(novelty)}
        if score < self.reject_below_ and not declared_radiograph:
            return GateResult(REJECT, f"does not look like a radiograph (radiograph score {score:.2f})", signals)
        if score < self.ok_above_:
            return GateResult(
                WARN,
                f"a radiograph unlike the model's training images (radiograph score {score:.2f}): "
                "another body part or view? Interpret with caution",
                signals,
            )
        if novelty > self.warn_novelty_:
            return GateResult(
                WARN,
                f"unusual for the model's training data (novelty {novelty:.1f} > {self.warn_novelty_:.1f}); "
                "interpret with caution",
                signals,
            )
        return GateResult(OK, "", signals)

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            feature_mean=self.feature_mean_,
            feature_scale=self.feature_scale_,
            coef=self.coef_,
            scalars=np.array([self.intercept_, self.ok_above_, self.reject_below_, self.warn_novelty_]),
            mean=self.mean_.astype(np.float32),
            components=self.components_.astype(np.float32),
            scales=self.scales_.astype(np.float32),
        )

    @classmethod
    def load(cls, path: str | Path) -> FittedGate:
        with np.load(path, allow_pickle=False) as data:  # no pickles: a bundle never runs code
            intercept, ok_above, reject_below, warn_novelty = data["scalars"].tolist()
            return cls(
                data["feature_mean"],
                data["feature_scale"],
                data["coef"],
                intercept,
                ok_above,
                reject_below,
                data["mean"].astype(np.float64),
                data["components"].astype(np.float64),
                data["scales"].astype(np.float64),
                warn_novelty,
            )


def body_part_warning(body_part: str | None, trained_on: str | None) -> str | None:
    """A DICOM header naming another body part than the training data's."""
    if not body_part or not trained_on or body_part.strip().upper() == trained_on.upper():
        return None
    return f"DICOM body part {body_part.strip().upper()} is not what the model was trained on ({trained_on.upper()})"


def summarize_card_gate(gate: dict[str, Any]) -> str:
    """One paragraph for the Model page."""
    m = gate.get("measured", {})
    parts = [
        "Every image is checked before it is scored: colour, blank, noise and document-like images, and images "
        f"whose radiograph score is below {gate['reject_below']:.2f}, are rejected; radiographs unlike the training "
        f"data (score below {gate['ok_above']:.2f}, novelty above {gate['warn_novelty']:.2f}, or a DICOM body part "
        "other than the training data's) are scored with a warning."
    ]
    if m:
        parts.append(
            f"Measured: {m.get('val_ok_rate', float('nan')):.1%} of validation radiographs pass as ok; "
            f"{m.get('non_radiograph_reject_rate', float('nan')):.1%} of {m.get('non_radiograph_n', 0)} non-radiographs rejected; "
            f"{m.get('other_anatomy_warned_or_rejected', 0)} of {m.get('other_anatomy_n', 0)} other-anatomy radiographs flagged."
        )
    return " ".join(parts)
