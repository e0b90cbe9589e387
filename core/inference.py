"""Scoring: one compiled call returns probabilities, embeddings and Grad-CAM maps for a batch.

A :class:`Predictor` loads a bundle once, warms its compiled functions at load, and is safe
to share between threads (Streamlit sessions): TensorFlow functions are re-entrant and the
predictor holds no per-call state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.bundle import Bundle, load_bundle, sha256_file
from core.decode import DecodedImage, decode_bytes, read_file
from core.errors import ImageRejected
from core.gate import (
    GATE_SIDE,
    RADIOGRAPH_MODALITIES,
    REJECT,
    GateResult,
    body_part_warning,
    gate_thumbnail,
    pixel_signals,
    pixel_verdict,
)
from core.limits import DEFAULT_LIMITS, Limits, enforce_study
from core.model import FEATURE_LAYER, LOGIT_LAYER, POOL_LAYER
from core.preprocess import Box, letterbox, to_model_input

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
MAX_BATCH = BATCH_BUCKETS[-1]
DECODE_WORKERS = 4


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def bucket_size(n: int) -> int:
    """Smallest bucket holding ``n`` rows; padding to few shapes keeps compiled graphs reused."""
    for size in BATCH_BUCKETS:
        if n <= size:
            return size
    return MAX_BATCH


@dataclass(frozen=True)
class Prepared:
    """A decoded file ready for the model."""

    image: DecodedImage
    model_input: np.ndarray  # (S, S, 3) float 0–255
    box: Box
    sha256: str
    signals: dict[str, float] | None = None  # the gate's pixel statistics
    thumbnail: np.ndarray | None = field(default=None, repr=False)  # the gate network's input


@dataclass(frozen=True)
class ImageScore:
    """The outcome for one file: a probability, or an error and no probability."""

    name: str
    sha256: str
    probability: float | None = None
    logit: float | None = None
    error: str | None = None
    image: DecodedImage | None = None
    cam: np.ndarray | None = field(default=None, repr=False)  # feature-map resolution, [0, 1]
    box: Box | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)
    gate: GateResult | None = None

    @property
    def scored(self) -> bool:
        return self.probability is not None


class Predictor:
    """Scores batches of radiographs with one bundle (scikit-learn-like ``predict_proba``)."""

    classes_ = ("normal", "abnormal")

    def __init__(self, bundle: Bundle, warm: bool = True, limits: Limits = DEFAULT_LIMITS) -> None:
        import keras
        import tensorflow as tf

        self.bundle_ = bundle
        self.limits_ = limits
        self.input_size_ = bundle.input_size
        self.threshold_ = bundle.threshold
        self.calibration_ = bundle.calibration
        self.gate_ = bundle.gate
        self.body_part_ = (bundle.card.get("training_data") or {}).get("body_part")
        model = bundle.model
        self._explainer = keras.Model(
            model.input,
            [
                model.get_layer(FEATURE_LAYER).output,
                model.get_layer(POOL_LAYER).output,
                model.get_layer(LOGIT_LAYER).output,
            ],
            name="explainer",
        )
        spec = [tf.TensorSpec([None, self.input_size_, self.input_size_, 3], tf.float32)]

        @tf.function(input_signature=spec)
        def score(x):
            _, pooled, logit = self._explainer(x, training=False)
            return logit[:, 0], pooled

        @tf.function(input_signature=spec)
        def score_and_explain(x):
            with tf.GradientTape() as tape:
                features, pooled, logit = self._explainer(x, training=False)
                # Images are independent at inference (BN frozen), so the gradient of the
                # summed logits is each image's own gradient.
                target = tf.reduce_sum(logit)
            grads = tape.gradient(target, features)
            weights = tf.reduce_mean(grads, axis=(1, 2))
            cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", features, weights))
            peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
            cam = tf.math.divide_no_nan(cam, peak)
            return logit[:, 0], pooled, cam

        self._score = score
        self._score_and_explain = score_and_explain
        if warm:
            self.warm_up()

    @classmethod
    def from_bundle_dir(
        cls, path: str | Path | None = None, warm: bool = True, limits: Limits = DEFAULT_LIMITS
    ) -> Predictor:
        return cls(load_bundle(path), warm=warm, limits=limits)

    @property
    def card(self) -> dict:
        return self.bundle_.card

    def warm_up(self) -> None:
        """Trace both compiled functions once so the first real request is fast."""
        blank = np.zeros((1, self.input_size_, self.input_size_, 3), np.float32)
        self._score(blank)
        self._score_and_explain(blank)
        if self.gate_ is not None:
            self.gate_.radiograph_score(np.zeros((1, GATE_SIDE, GATE_SIDE), np.float32))

    # -- array API ---------------------------------------------------------------------
    def _run(self, inputs: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        inputs = np.asarray(inputs, dtype=np.float32)
        logits, pooled, cams = [], [], []
        for start in range(0, len(inputs), MAX_BATCH):
            chunk = inputs[start : start + MAX_BATCH]
            n = len(chunk)
            padded = np.zeros((bucket_size(n), *chunk.shape[1:]), np.float32)
            padded[:n] = chunk
            if explain:
                logit, pool, cam = self._score_and_explain(padded)
                cams.append(cam.numpy()[:n])
            else:
                logit, pool = self._score(padded)
            logits.append(logit.numpy()[:n])
            pooled.append(pool.numpy()[:n])
        if not logits:
            empty = np.zeros((0,), np.float32)
            return empty, np.zeros((0, 0), np.float32), (np.zeros((0, 0, 0), np.float32) if explain else None)
        return np.concatenate(logits), np.concatenate(pooled), (np.concatenate(cams) if explain else None)

    def decision_function(self, inputs: np.ndarray) -> np.ndarray:
        """Raw logits, before calibration."""
        return self._run(inputs, explain=False)[0]

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) 0–255 inputs → (N, 2) probabilities of [normal, abnormal]."""
        p = self.probability(self.decision_function(inputs))
        return np.stack([1 - p, p], axis=1)

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probability of abnormal from logits (Platt scaling from the card)."""
        slope, intercept = self.calibration_
        return sigmoid(slope * np.asarray(logits) + intercept)

    def logits_and_embeddings(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits and penultimate-layer embeddings from one forward pass."""
        logits, pooled, _ = self._run(inputs, explain=False)
        return logits, pooled

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        """Penultimate-layer embeddings (global average pool), used by the novelty gate."""
        return self._run(inputs, explain=False)[1]

    def explain(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, embeddings, Grad-CAM maps in [0, 1]) in one compiled call per batch."""
        logits, pooled, cams = self._run(inputs, explain=True)
        return self.probability(logits), pooled, cams

    # -- file API ----------------------------------------------------------------------
    def prepare(self, name: str, data: bytes | None = None, path: str | Path | None = None) -> Prepared:
        """Decode and preprocess one file (raises ImageRejected)."""
        if data is None:
            if path is None:
                raise ValueError("prepare() needs data or path")
            data = read_file(path, name, max_file_bytes=self.limits_.max_file_bytes)  # read once: decode and hash
        image = decode_bytes(data, name, max_pixels=self.limits_.max_pixels, max_file_bytes=self.limits_.max_file_bytes)
        data_hash = hashlib.sha256(data).hexdigest()
        canvas, box = letterbox(image.pixels, self.input_size_)
        return Prepared(image=image, model_input=to_model_input(canvas), box=box, sha256=data_hash)

    def score_files(
        self, files: Sequence[tuple[str, bytes]] | Iterable[str | Path], explain: bool = True, progress=None
    ) -> list[ImageScore]:
        """Score a study's files; bad files get an error, the rest are still scored.

        ``files`` is a list of (name, bytes) pairs or of paths. Decoding runs in a thread pool
        so that the next batch is decoded while the model scores the current one.
        ``progress(done, total)`` is called as batches finish.
        """
        files = list(files)
        enforce_study(files, self.limits_)  # raises StudyRejected before anything is decoded
        items = [_as_item(f) for f in files]
        results: list[ImageScore | None] = [None] * len(items)
        with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
            futures = [pool.submit(self._safe_prepare, *item) for item in items]
            done = 0
            for start in range(0, len(items), MAX_BATCH):
                chunk = [(i, futures[i].result()) for i in range(start, min(start + MAX_BATCH, len(items)))]
                ok = [(i, prep) for i, prep in chunk if isinstance(prep, Prepared)]
                for i, prep in chunk:
                    if not isinstance(prep, Prepared):
                        results[i] = prep
                if ok:
                    batch = np.stack([prep.model_input for _, prep in ok])
                    logits, pooled, cams = self._run(batch, explain)
                    probs = self.probability(logits)
                    radiograph = self._radiograph_scores([prep for _, prep in ok])
                    for k, (i, prep) in enumerate(ok):
                        gate = self._novelty_gate(prep, pooled[k], None if radiograph is None else float(radiograph[k]))
                        rejected = gate.status == REJECT
                        results[i] = ImageScore(
                            name=prep.image.name,
                            sha256=prep.sha256,
                            probability=None if rejected else float(probs[k]),
                            logit=None if rejected else float(logits[k]),
                            error=gate.reason if rejected else None,
                            image=prep.image,
                            cam=None if cams is None or rejected else cams[k],
                            box=prep.box,
                            embedding=pooled[k],
                            gate=gate,
                        )
                done += len(chunk)
                if progress is not None:
                    progress(done, len(items))
        return [r for r in results if r is not None]

    def _pixel_gate(self, prep: Prepared | ImageScore) -> Prepared | ImageScore:
        """Refuse plain non-radiographs before they reach the model."""
        if not isinstance(prep, Prepared):
            return prep
        signals = pixel_signals(prep.image.pixels, prep.image.meta.colourfulness)
        verdict = pixel_verdict(signals)
        if verdict.status == REJECT:
            return ImageScore(
                name=prep.image.name, sha256=prep.sha256, error=verdict.reason, image=prep.image, gate=verdict
            )
        thumbnail = gate_thumbnail(prep.image.pixels) if self.gate_ else None
        return Prepared(prep.image, prep.model_input, prep.box, prep.sha256, signals, thumbnail)

    def _radiograph_scores(self, preps: list[Prepared]) -> np.ndarray | None:
        if self.gate_ is None:
            return None
        return self.gate_.radiograph_score(np.stack([prep.thumbnail for prep in preps]))

    def _novelty_gate(self, prep: Prepared, embedding: np.ndarray, score: float | None) -> GateResult:
        signals = prep.signals or {}
        if self.gate_ is None or score is None:
            verdict = GateResult("ok", "", signals)
        else:
            meta = prep.image.meta
            declared = meta.source_format == "DICOM" and (meta.modality or "").upper() in RADIOGRAPH_MODALITIES
            verdict = self.gate_.verdict(score, float(self.gate_.novelty(embedding)[0]), signals, declared)
        warning = body_part_warning(prep.image.meta.body_part, self.body_part_)
        if verdict.status == "ok" and warning:
            return GateResult("warn", warning + "; interpret with caution", verdict.signals)
        return verdict

    def _safe_prepare(self, name: str, data: bytes | None, path: str | None) -> Prepared | ImageScore:
        try:
            return self._pixel_gate(self.prepare(name, data=data, path=path))
        except ImageRejected as err:
            digest = hashlib.sha256(data).hexdigest() if data is not None else _sha256_or_empty(path)
            return ImageScore(name=name, sha256=digest, error=err.reason, gate=GateResult(REJECT, err.reason, {}))
        except Exception as err:  # a decoder bug must not take down the study
            digest = hashlib.sha256(data).hexdigest() if data is not None else _sha256_or_empty(path)
            reason = f"could not be read ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
            return ImageScore(name=name, sha256=digest, error=reason, gate=GateResult(REJECT, reason, {}))


def _as_item(entry) -> tuple[str, bytes | None, str | None]:
    if isinstance(entry, tuple):
        name, data = entry
        return str(name), bytes(data), None
    path = Path(entry)
    return path.name, None, str(path)


def _sha256_or_empty(path: str | None) -> str:
    try:
        return sha256_file(path) if path else ""
    except OSError:
        return ""
