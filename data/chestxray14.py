"""NIH ChestX-ray14: ``Data_Entry_2017*.csv`` labels, images under ``images*/`` folders.

Label 1 = any finding other than ``No Finding``. Splits follow the official
``train_val_list.txt`` / ``test_list.txt`` when present; ``val`` is carved out of ``train``
per patient.
"""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

from data.records import Issue, Record, carve_validation

LABEL_FILES = (
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
)
# The bracketed header names hold commas, so the header splits into 11 fields like the rows.
HEADER = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
]
NORMAL = "No Finding"


def find_label_file(root: str | Path) -> Path | None:
    """The first label file found in ``root`` (the 2020 revision preferred)."""
    for name in LABEL_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return path.open(newline="", encoding="utf-8")


def _read_list(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        return {line.strip() for line in handle if line.strip()}


def _index_images(root: Path, issues: list[Issue]) -> dict[str, str] | None:
    """Image name → path for every PNG under ``root/images*``; None when no such folder."""
    folders = sorted(p for p in root.glob("images*") if p.is_dir())
    if not folders:
        return None
    index: dict[str, str] = {}
    for folder in folders:
        # os.walk rather than Path.rglob: ~10× faster over 112k files
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.lower().endswith(".png"):
                    continue
                path = os.path.join(dirpath, name)
                if name in index:
                    issues.append(Issue(path, f"duplicate image name (also at {index[name]}); keeping the first"))
                    continue
                index[name] = path
    return index


def load_chestxray14(
    root: str | Path, val_fraction: float = 0.1, view_position: str | None = None
) -> tuple[list[Record], list[Issue]]:
    """Records for ChestX-ray14 under ``root``; ``view_position`` (``PA``/``AP``) filters rows.

    Without any ``images*`` folder (a labels-only install) image paths point at
    ``root/images/<name>`` and missing images are not reported.
    """
    root = Path(root)
    if not root.is_dir():
        return [], [Issue(str(root), "dataset folder does not exist")]
    label_file = find_label_file(root)
    if label_file is None:
        return [], [Issue(str(root), f"no label file ({' / '.join(LABEL_FILES)})")]

    issues: list[Issue] = []
    test_list = _read_list(root / "test_list.txt")
    train_list = _read_list(root / "train_val_list.txt")
    index = _index_images(root, issues)
    view = view_position.strip().upper() if view_position else None

    records: list[Record] = []
    labelled: set[str] = set()
    with _open_text(label_file) as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if [h.strip() for h in header[: len(HEADER)]] != HEADER:
            return [], [Issue(f"{label_file}:1", f"unexpected header {header!r}")]
        for line, row in enumerate(reader, start=2):
            # 11 fields; the original 2017 file adds a trailing empty one
            if len(row) not in (11, 12) or (len(row) == 12 and row[11].strip()):
                if any(field.strip() for field in row):
                    issues.append(Issue(f"{label_file}:{line}", f"malformed row ({len(row)} fields, want 11)"))
                continue
            name, findings, follow_up, patient, _, _, row_view = (field.strip() for field in row[:7])
            if not name or not findings or not patient:
                issues.append(Issue(f"{label_file}:{line}", "malformed row (empty image, findings or patient)"))
                continue
            if name in labelled:
                issues.append(Issue(f"{label_file}:{line}", f"duplicate row for {name}; keeping the first"))
                continue
            labelled.add(name)
            if view and row_view.upper() != view:
                continue
            if index is None:
                image_path = str(root / "images" / name)
            elif name in index:
                image_path = index[name]
            else:
                issues.append(Issue(str(root / name), "label row but no image under images*/"))
                continue
            if test_list is not None and name in test_list:
                split = "test"
            else:
                split = "train"
                if train_list is not None and name not in train_list:
                    issues.append(Issue(image_path, "in neither train_val_list.txt nor test_list.txt; using train"))
            records.append(
                Record(
                    image_path=image_path,
                    label=0 if findings == NORMAL else 1,
                    study_id=f"{patient}/{follow_up}",
                    patient_id=patient,
                    body_part="CHEST",
                    split=split,
                    fine_label=findings,
                )
            )

    if index is not None:
        for name in sorted(index.keys() - labelled):
            issues.append(Issue(index[name], f"image has no row in {label_file.name}"))
    for list_name, names in (("test_list.txt", test_list), ("train_val_list.txt", train_list)):
        for name in sorted((names or set()) - labelled):
            issues.append(Issue(str(root / list_name), f"lists {name} which has no row in {label_file.name}"))
    return carve_validation(records, val_fraction), issues
