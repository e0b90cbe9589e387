"""Plain class folders: ``root/{split}/{class}/image``, with a class → label mapping."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data.records import Issue, Record

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


@dataclass(frozen=True)
class FolderPreset:
    """How to read one class-folder dataset."""

    name: str
    class_labels: dict[str, int]
    body_part: str
    patient_of: Callable[[str], str] = field(default=lambda stem: stem)
    study_of: Callable[[str], str] = field(default=lambda stem: stem)


def _knee_patient(stem: str) -> str:
    match = re.match(r"(\d{7})", stem)
    return match.group(1) if match else stem


# KL 0–1 normal, 2–4 abnormal: radiographic osteoarthritis, the usual clinical cut-off.
KNEE_KL = FolderPreset(
    name="knee-kl",
    class_labels={"0": 0, "1": 0, "2": 1, "3": 1, "4": 1},
    body_part="KNEE",
    patient_of=_knee_patient,
    study_of=lambda stem: stem,  # one knee image is one study (one side of one patient)
)
PRESETS = {"knee-kl": KNEE_KL}


def load_folders(root: str | Path, preset: FolderPreset = KNEE_KL) -> tuple[list[Record], list[Issue]]:
    """All images under ``root/{split}/{class}/``; unknown classes and files are reported."""
    root = Path(root)
    records: list[Record] = []
    issues: list[Issue] = []
    if not root.is_dir():
        return [], [Issue(str(root), "dataset folder does not exist")]
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if class_dir.name not in preset.class_labels:
                issues.append(Issue(str(class_dir), f"class folder '{class_dir.name}' has no label mapping"))
                continue
            label = preset.class_labels[class_dir.name]
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    issues.append(Issue(str(path), "not an image file (unexpected suffix)"))
                    continue
                stem = path.stem
                patient = preset.patient_of(stem)
                records.append(
                    Record(
                        image_path=str(path),
                        label=label,
                        study_id=f"{split_dir.name}/{preset.study_of(stem)}",
                        patient_id=patient,
                        body_part=preset.body_part,
                        split=split_dir.name,
                        fine_label=class_dir.name,
                    )
                )
    return records, issues
