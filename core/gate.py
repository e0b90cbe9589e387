"""Input gate: is this a radiograph, and is it like the model's training data?

Three outcomes per image, decided before (pixel signals) and after (embedding novelty) the
forward pass:

- ``reject`` — not a radiograph: colour photographs and screenshots (saturation), blank or
  near-constant images (contrast), noise (no spatial correlation), documents and flat
  graphics (one intensity dominates), or a low radiograph score from a small CNN trained to
  tell the training radiographs from photographs, pages and screenshots.
- ``warn`` — a radiograph unlike the training data (another body part, an unusual view): a
  low radiograph score on a DICOM whose header declares a radiograph (CR, DX), a DICOM body
  part other than the training data's, or an embedding far (Mahalanobis, PCA subspace) from
  the training embeddings.
- ``ok`` — everything else.

The pixel rules are fixed, named constants; the radiograph network, the novelty model and
their thresholds are fitted per bundle (``training.gate``) and stored in ``gate.npz`` + card
(plain arrays: loading a gate never unpickles or runs code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
GATE_SIDE = 64  # the gate network sees the whole image at this size
NETWORK_WIDTHS = (16, 32, 48, 64)
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


def shrink(pixels: np.ndarray, side: int) -> np.ndarray:
    """The image averaged down so that its longer side is at most ``side`` (float32)."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F")
    scale = side / max(image.size)
    if scale < 1:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX
        )
    return np.asarray(image, dtype=np.float32)


def _analysis_view(pixels: np.ndarray) -> np.ndarray:
    return shrink(pixels, ANALYSIS_SIDE).astype(np.float64)


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


def gate_thumbnail(pixels: np.ndarray, side: int = GATE_SIDE) -> np.ndarray:
    """The gate network's input: the whole image, aspect kept, centred on a black square."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F")
    scale = side / max(image.size)
    size = (max(1, min(side, round(image.width * scale))), max(1, min(side, round(image.height * scale))))
    canvas = np.zeros((side, side), np.float32)
    left, top = (side - size[0]) // 2, (side - size[1]) // 2
    canvas[top : top + size[1], left : left + size[0]] = np.asarray(image.resize(size, Image.Resampling.BOX))
    return np.clip(canvas, 0.0, 1.0)


def build_gate_network(side: int = GATE_SIDE):
    """A small CNN giving the logit that a thumbnail is a radiograph like the training data."""
    import keras

    x = inputs = keras.Input((side, side, 1), name="thumbnail")
    for i, width in enumerate(NETWORK_WIDTHS):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.Concatenate(name="pooled")(
        [keras.layers.GlobalAveragePooling2D(name="mean")(x), keras.layers.GlobalMaxPooling2D(name="max")(x)]
    )
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="radiograph_logit")(x), name="gate_network")


def _compile_network(weights: tuple[np.ndarray, ...]):
    import tensorflow as tf

    network = build_gate_network()
    network.set_weights(list(weights))

    @tf.function(input_signature=[tf.TensorSpec([None, GATE_SIDE, GATE_SIDE, 1], tf.float32)])
    def forward(x):
        return network(x, training=False)[:, 0]

    return forward


@dataclass(frozen=True, eq=False)
class FittedGate:
    """The per-bundle part of the gate, fitted by ``training.gate``.

    A small CNN's radiograph score on :func:`gate_thumbnail` (reject below ``reject_below_``,
    warn below ``ok_above_``), and a Mahalanobis novelty of the model's embedding in a PCA
    subspace of the training embeddings (warn above ``warn_novelty_``).
    """

    network_weights_: tuple[np.ndarray, ...]
    ok_above_: float
    reject_below_: float
    mean_: np.ndarray
    components_: np.ndarray
    scales_: np.ndarray
    warn_novelty_: float
    _forward: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Compiled once at load: the predictor is shared between threads and sessions.
        object.__setattr__(self, "_forward", _compile_network(self.network_weights_))

    def radiograph_score(self, thumbnails: np.ndarray) -> np.ndarray:
        """Probability that each (side, side) thumbnail is a radiograph like the training data."""
        x = np.asarray(thumbnails, dtype=np.float32).reshape(-1, GATE_SIDE, GATE_SIDE, 1)
        logits = self._forward(x).numpy().astype(np.float64) if len(x) else np.zeros(0)
        return 1.0 / (1.0 + np.exp(-logits))

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
            return GateResult(REJECT, f"does not look like a radiograph (radiograph score {score:.3f})", signals)
        if score < self.ok_above_:
            return GateResult(
                WARN,
                f"a radiograph unlike the model's training images (radiograph score {score:.3f}): "
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
            scalars=np.array([self.ok_above_, self.reject_below_, self.warn_novelty_]),
            mean=self.mean_.astype(np.float32),
            components=self.components_.astype(np.float32),
            scales=self.scales_.astype(np.float32),
            **{f"network_{i:03d}": w for i, w in enumerate(self.network_weights_)},
        )

    @classmethod
    def load(cls, path: str | Path) -> FittedGate:
        with np.load(path, allow_pickle=False) as data:  # no pickles: a bundle never runs code
            weights = tuple(data[key] for key in sorted(k for k in data.files if k.startswith("network_")))
            if not weights:
                raise ValueError("no gate network in it (an older gate format): refit with python -m training.gate")
            ok_above, reject_below, warn_novelty = data["scalars"].tolist()
            return cls(
                weights,
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
        "whose radiograph score (a small convolutional network trained to tell the training radiographs from "
        f"photographs, pages and screenshots) is below {gate['reject_below']:.3f}, are rejected. A DICOM whose "
        "header declares a radiograph (CR, DX) is warned instead of rejected, as are radiographs unlike the "
        f"training data (novelty above {gate['warn_novelty']:.2f}, or a DICOM body part other than the training "
        "data's): they are scored, with a warning."
    ]
    if m:
        parts.append(
            f"Measured: {m.get('val_ok_rate', float('nan')):.1%} of validation radiographs pass as ok; "
            f"{m.get('non_radiograph_reject_rate', float('nan')):.1%} of {m.get('non_radiograph_n', 0)} "
            "non-radiographs rejected (each judged by a gate fitted without any image of its source); "
            f"{m.get('other_anatomy_warned_or_rejected', 0)} of {m.get('other_anatomy_n', 0)} other-anatomy "
            "radiographs flagged."
        )
    return " ".join(parts)
