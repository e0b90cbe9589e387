"""The one record shape every adapter yields, and patient-disjoint splitting."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Record:
    """One image. ``label`` is 1 for abnormal; ``fine_label`` is the source's own label."""

    image_path: str
    label: int
    study_id: str
    patient_id: str
    body_part: str
    split: str
    fine_label: str = ""


@dataclass(frozen=True)
class Issue:
    """A problem found while reading a dataset, reported rather than silently dropped."""

    path: str
    reason: str


def patient_bucket(patient_id: str, salt: str = "bonesentinel-split") -> float:
    """A stable pseudo-random number in [0, 1) per patient, independent of file order."""
    digest = hashlib.sha256(f"{salt}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def carve_validation(
    records: Iterable[Record], fraction: float, source: str = "train", target: str = "val"
) -> list[Record]:
    """Move a patient-disjoint ``fraction`` of ``source`` records to ``target``.

    The split is decided per patient id, so no patient can land on both sides.
    """
    out = []
    for record in records:
        if record.split == source and patient_bucket(record.patient_id) < fraction:
            record = replace(record, split=target)
        out.append(record)
    return out


def summarize(records: Sequence[Record]) -> dict:
    """Counts of images, studies, patients and abnormal images, per split and body part."""

    def counts(rows: Sequence[Record]) -> dict:
        return {
            "images": len(rows),
            "studies": len({r.study_id for r in rows}),
            "patients": len({r.patient_id for r in rows}),
            "abnormal_images": sum(r.label for r in rows),
        }

    splits = sorted({r.split for r in records})
    return {
        "total": counts(records),
        "splits": {
            split: {
                **counts([r for r in records if r.split == split]),
                "body_parts": {
                    part: counts([r for r in records if r.split == split and r.body_part == part])
                    for part in sorted({r.body_part for r in records if r.split == split})
                },
            }
            for split in splits
        },
    }
