"""MURA v1.1: ``MURA-v1.1/{train,valid}/XR_<PART>/patientNNNNN/studyN_{positive,negative}/imageN.png``.

Labels are per study (1 = abnormal). The official ``valid`` split is kept as the evaluation
split ``valid``; a patient-disjoint ``val`` is carved out of ``train`` for model selection.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from data.folders import IMAGE_SUFFIXES
from data.records import Issue, Record, carve_validation

BASE_NAME = "MURA-v1.1"
SPLITS = ("train", "valid")
_STUDY_RE = re.compile(r"^study\d+_(positive|negative)$")
_LABEL_NAMES = {0: "negative", 1: "positive"}


def find_base(root: str | Path) -> Path | None:
    """The ``MURA-v1.1`` folder: ``root`` itself or its ``MURA-v1.1`` child, else None."""
    root = Path(root)
    if (root / BASE_NAME).is_dir():
        return root / BASE_NAME
    if root.is_dir() and (root.name == BASE_NAME or any((root / split).is_dir() for split in SPLITS)):
        return root
    return None


def _relative_key(raw: str) -> str:
    """A CSV path (``MURA-v1.1/train/.../``) as a key relative to the base folder."""
    parts = [p for p in raw.strip().replace("\\", "/").split("/") if p and p != "."]
    if parts and parts[0] == BASE_NAME:
        parts = parts[1:]
    return "/".join(parts)


def _folder_label(study_name: str) -> int | None:
    match = _STUDY_RE.match(study_name)
    if not match:
        return None
    return 1 if match.group(1) == "positive" else 0


def _read_csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every non-blank line of a header-less CSV."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [(n, row) for n, row in enumerate(csv.reader(handle), start=1) if any(f.strip() for f in row)]


def _read_labels(path: Path, split: str, issues: list[Issue]) -> dict[str, int]:
    """``{split}_labeled_studies.csv`` as study key → label; bad rows become issues."""
    labels: dict[str, int] = {}
    for line, row in _read_csv_rows(path):
        where = f"{path}:{line}"
        if len(row) != 2 or row[1].strip() not in ("0", "1"):
            issues.append(Issue(where, f"malformed labeled-studies row (want 'study_path,0|1'): {','.join(row)!r}"))
            continue
        key = _relative_key(row[0])
        if not key.startswith(f"{split}/") or len(key.split("/")) != 4:
            issues.append(Issue(where, f"malformed labeled-studies row (not a {split} study folder): {row[0]!r}"))
            continue
        label = int(row[1])
        if labels.get(key, label) != label:
            issues.append(Issue(where, f"study {key} labelled both {labels[key]} and {label}; keeping the first"))
            continue
        labels.setdefault(key, label)
    return labels


def _read_image_list(path: Path, split: str, issues: list[Issue]) -> list[str]:
    """``{split}_image_paths.csv`` as image keys; bad rows become issues."""
    keys = []
    for line, row in _read_csv_rows(path):
        key = _relative_key(row[0]) if len(row) == 1 else ""
        if not key.startswith(f"{split}/") or len(key.split("/")) != 5:
            issues.append(
                Issue(f"{path}:{line}", f"malformed image-paths row (want one {split} image path): {','.join(row)!r}")
            )
            continue
        keys.append(key)
    return keys


def _scan_split(base: Path, split: str, issues: list[Issue]) -> dict[str, list[Path]]:
    """Study key → its image files on disk; anything out of place is reported."""
    studies: dict[str, list[Path]] = {}
    for part_dir in sorted((base / split).iterdir()):
        if not part_dir.is_dir() or not part_dir.name.startswith("XR_"):
            issues.append(Issue(str(part_dir), "not an XR_<PART> body-part folder"))
            continue
        for patient_dir in sorted(part_dir.iterdir()):
            if not patient_dir.is_dir() or not patient_dir.name.startswith("patient"):
                issues.append(Issue(str(patient_dir), "not a patientNNNNN folder"))
                continue
            for study_dir in sorted(patient_dir.iterdir()):
                if not study_dir.is_dir() or not study_dir.name.startswith("study"):
                    issues.append(Issue(str(study_dir), "not a studyN_<label> folder"))
                    continue
                images = []
                for path in sorted(study_dir.iterdir()):
                    # macOS archives leave '._image1.png' resource forks beside the real files
                    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                        issues.append(Issue(str(path), "not an image file"))
                        continue
                    images.append(path)
                studies[f"{split}/{part_dir.name}/{patient_dir.name}/{study_dir.name}"] = images
    return studies


def _load_split(base: Path, split: str, issues: list[Issue]) -> list[Record]:
    split_dir = base / split
    if not split_dir.is_dir():
        issues.append(Issue(str(split_dir), f"MURA split folder '{split}' is missing"))
        return []
    studies = _scan_split(base, split, issues)

    label_csv = base / f"{split}_labeled_studies.csv"
    labels = _read_labels(label_csv, split, issues) if label_csv.is_file() else None
    image_csv = base / f"{split}_image_paths.csv"
    if image_csv.is_file():
        on_disk = {f"{key}/{p.name}" for key, paths in studies.items() for p in paths}
        listed = _read_image_list(image_csv, split, issues)
        for key in listed:
            if key not in on_disk:
                issues.append(Issue(str(base / key), f"listed in {image_csv.name} but missing on disk"))
        for key in sorted(on_disk - set(listed)):
            issues.append(Issue(str(base / key), f"on disk but not listed in {image_csv.name}"))

    if labels is not None:
        for key in sorted(labels):
            if not studies.get(key):
                issues.append(Issue(str(base / key), f"labelled in {label_csv.name} but the study has no images"))

    records = []
    for key, paths in sorted(studies.items()):
        if not paths:
            if labels is None or key not in labels:  # else already reported above
                issues.append(Issue(str(base / key), "study folder has no images"))
            continue
        _, part_name, patient, study_name = key.split("/")
        from_folder = _folder_label(study_name)
        label = labels.get(key) if labels is not None else from_folder
        if labels is not None and label is None:
            if from_folder is None:
                issues.append(
                    Issue(str(base / key), f"study has no row in {label_csv.name} and no label suffix; skipped")
                )
                continue
            label = from_folder
            for path in paths:
                issues.append(Issue(str(path), f"study has no row in {label_csv.name}; label taken from folder name"))
        elif label is None:
            issues.append(Issue(str(base / key), "study folder name has no _positive/_negative suffix; skipped"))
            continue
        elif from_folder is not None and from_folder != label:
            issues.append(
                Issue(
                    str(base / key),
                    f"{label_csv.name} says {label} but folder suffix says {from_folder}; using the CSV",
                )
            )
        records.extend(
            Record(
                image_path=str(path),
                label=label,
                study_id=key,
                patient_id=patient,
                body_part=part_name.removeprefix("XR_"),
                split=split,
                fine_label=_LABEL_NAMES[label],
            )
            for path in paths
        )
    return records


def load_mura(root: str | Path, val_fraction: float = 0.1) -> tuple[list[Record], list[Issue]]:
    """Records for MURA v1.1 under ``root`` (the folder holding ``MURA-v1.1`` or that folder).

    Splits: ``train``, ``val`` (patient-disjoint ``val_fraction`` of train) and ``valid``
    (the official validation set, used as the evaluation split).
    """
    base = find_base(root)
    if base is None:
        return [], [Issue(str(root), f"no {BASE_NAME} folder (or train/valid split folders) found")]
    issues: list[Issue] = []
    records = [record for split in SPLITS for record in _load_split(base, split, issues)]
    return carve_validation(records, val_fraction), issues
