"""Analyse a study and log it: the logic behind the Analyze page, free of Streamlit.

Scoring goes through :class:`core.inference.Predictor` (the same path as the CLI); this
module turns its results into what the page shows and what the prediction log stores.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.aggregate import StudyResult, aggregate_study
from core.gradcam import DEFAULT_ALPHA, grayscale_image, overlay_for
from core.inference import ImageScore, Predictor
from dashboard.store import ImageInput, StudyInput, save_study

THUMBNAIL_SIDE = 256
STORED_OVERLAY_SIDE = 512
BODY_PARTS = (
    "KNEE",
    "HIP",
    "ANKLE",
    "FOOT",
    "SHOULDER",
    "ELBOW",
    "FOREARM",
    "WRIST",
    "HAND",
    "FINGER",
    "HUMERUS",
    "OTHER",
)


@dataclass(frozen=True)
class StudyForm:
    """What the clinician typed: all optional except the aggregate method."""

    identifier: str | None = None
    body_part: str | None = None
    note: str = ""
    aggregate: str = "mean"


@dataclass(frozen=True)
class StudyOutcome:
    """A scored study: per-image scores in upload order, the aggregate, and where it was logged."""

    scores: tuple[ImageScore, ...]
    result: StudyResult | None
    shares: tuple[float | None, ...]  # aligned with ``scores``; None for unscored files
    study_id: int | None
    log_error: str | None

    @property
    def scored(self) -> list[ImageScore]:
        return [s for s in self.scores if s.scored]

    @property
    def rejected(self) -> list[ImageScore]:
        return [s for s in self.scores if not s.scored]


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def overlay_png(score: ImageScore, input_size: int, alpha: float = DEFAULT_ALPHA, max_side: int | None = None) -> bytes:
    """The Grad-CAM overlay of a scored image as PNG bytes."""
    image = overlay_for(score.image.pixels, score.cam, score.box, input_size, alpha)
    if max_side:
        image.thumbnail((max_side, max_side))
    return png_bytes(image)


def _image_input(score: ImageScore, share: float | None, input_size: int, store_images: bool) -> ImageInput:
    meta = score.image.meta if score.image else None
    thumb = overlay = None
    if store_images and score.scored:
        thumb = png_bytes(grayscale_image(score.image.pixels, THUMBNAIL_SIDE))
        if score.cam is not None:
            overlay = overlay_png(score, input_size, max_side=STORED_OVERLAY_SIDE)
    return ImageInput(
        file_name=score.name,
        file_sha256=score.sha256,
        probability=score.probability,
        error=score.error,
        gate_status=_gate_status(score),
        gate_reason=score.gate.reason if score.gate else (score.error or ""),
        share=share,
        source_format=meta.source_format if meta else None,
        width=meta.width if meta else None,
        height=meta.height if meta else None,
        thumbnail_png=thumb,
        overlay_png=overlay,
    )


def _gate_status(score: ImageScore) -> str:
    """The log's status: the gate's verdict, or "error" for a file that could not be decoded."""
    if score.gate is None:
        return "ok" if score.scored else "error"
    if score.image is None:
        return "error"
    return score.gate.status


def dicom_identifier(scores: Sequence[ImageScore]) -> str | None:
    """A patient id from a DICOM header, when the clinician typed none (stored hashed only)."""
    for score in scores:
        if score.image is not None and score.image.meta.patient_id:
            return score.image.meta.patient_id
    return None


def analyze_study(
    predictor: Predictor,
    files: Sequence[tuple[str, bytes]],
    form: StudyForm,
    *,
    engine=None,
    salt: bytes = b"",
    store_images: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> StudyOutcome:
    """Score every file, aggregate the scored ones, and log the study in one transaction.

    A file that cannot be read is reported and logged with its reason; the rest are scored.
    A failure to log is returned as ``log_error`` so the clinician still sees the scores.
    """
    from core.errors import BoneSentinelError

    scores = tuple(predictor.score_files(list(files), explain=True, progress=progress))
    scored = [s for s in scores if s.scored]
    result = aggregate_study([s.probability for s in scored], predictor.threshold_, form.aggregate) if scored else None
    share_of = iter(result.shares if result else ())
    shares = tuple(next(share_of) if s.scored else None for s in scores)

    study_id = log_error = None
    if engine is not None:
        card = predictor.card
        study = StudyInput(
            identifier=(form.identifier or "").strip() or dicom_identifier(scores),
            body_part=form.body_part,
            note=form.note,
            model_name=card["name"],
            model_version=card["version"],
            model_sha256=card["sha256"],
            threshold=predictor.threshold_,
            threshold_version=str(card.get("threshold_version") or card["version"]),
            aggregate=form.aggregate,
            probability=result.probability if result else None,
            decision=result.decision if result else None,
            images=tuple(
                _image_input(s, share, predictor.input_size_, store_images)
                for s, share in zip(scores, shares, strict=True)
            ),
        )
        try:
            study_id = save_study(engine, study, salt=salt, store_images=store_images)
        except BoneSentinelError as err:
            log_error = str(err)
    return StudyOutcome(scores=scores, result=result, shares=shares, study_id=study_id, log_error=log_error)
