"""MURA v1.1 adapter on synthetic trees in the official layout, and its CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data.mura import load_mura

ROOT = Path(__file__).resolve().parents[1]

# (split, part, patient, study folder, number of images)
STUDIES = [
    ("train", "XR_SHOULDER", "patient00001", "study1_positive", 3),
    ("train", "XR_SHOULDER", "patient00001", "study2_negative", 1),
    ("train", "XR_WRIST", "patient00002", "study1_negative", 2),
    ("train", "XR_HAND", "patient00003", "study1_positive", 1),
    ("valid", "XR_ELBOW", "patient11185", "study1_positive", 2),
    ("valid", "XR_FINGER", "patient11186", "study1_negative", 1),
]


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 128).save(path)


def _study_path(split: str, part: str, patient: str, study: str) -> str:
    return f"MURA-v1.1/{split}/{part}/{patient}/{study}/"


def make_mura(root: Path, studies=STUDIES, csvs: bool = True) -> Path:
    """A MURA v1.1 tree under ``root`` with header-less CSVs like the official release."""
    base = root / "MURA-v1.1"
    for split in ("train", "valid"):
        (base / split).mkdir(parents=True, exist_ok=True)
        image_lines, label_lines = [], []
        for s_split, part, patient, study, n in studies:
            if s_split != split:
                continue
            folder = _study_path(split, part, patient, study)
            for i in range(1, n + 1):
                _png(root / folder / f"image{i}.png")
                image_lines.append(f"{folder}image{i}.png")
            label_lines.append(f"{folder},{1 if study.endswith('positive') else 0}")
        if csvs:
            (base / f"{split}_image_paths.csv").write_text("\n".join(image_lines) + "\n")
            (base / f"{split}_labeled_studies.csv").write_text("\n".join(label_lines) + "\n")
    return base


def _by_path(records):
    return {Path(r.image_path).relative_to(Path(r.image_path).parents[4]).as_posix(): r for r in records}


@pytest.mark.parametrize("csvs", [True, False])
def test_clean_tree_labels_parts_ids(tmp_path, csvs):
    make_mura(tmp_path, csvs=csvs)
    records, issues = load_mura(tmp_path, val_fraction=0.0)
    assert issues == []
    assert len(records) == 10
    rows = _by_path(records)
    first = rows["train/XR_SHOULDER/patient00001/study1_positive/image2.png"]
    assert (first.label, first.fine_label, first.body_part, first.patient_id) == (
        1,
        "positive",
        "SHOULDER",
        "patient00001",
    )
    assert first.study_id == "train/XR_SHOULDER/patient00001/study1_positive"
    assert first.split == "train"
    wrist = rows["train/XR_WRIST/patient00002/study1_negative/image1.png"]
    assert (wrist.label, wrist.fine_label, wrist.body_part) == (0, "negative", "WRIST")
    assert {r.split for r in records if r.study_id.startswith("valid/")} == {"valid"}
    assert sum(r.split == "valid" for r in records) == 3
    assert len({r.study_id for r in records}) == len(STUDIES)
    assert Path(first.image_path).is_file()


def test_root_may_be_the_mura_folder_itself(tmp_path):
    base = make_mura(tmp_path)
    from_base, from_parent = load_mura(base, 0.0), load_mura(tmp_path, 0.0)
    assert from_base == from_parent and len(from_base[0]) == 10


def test_val_is_carved_patient_disjoint_from_train(tmp_path):
    studies = [
        ("train", "XR_HAND", f"patient{i:05d}", "study1_positive" if i % 3 else "study1_negative", 2) for i in range(60)
    ]
    studies += [("valid", "XR_HAND", "patient99999", "study1_negative", 1)]
    make_mura(tmp_path, studies)
    records, issues = load_mura(tmp_path, val_fraction=0.3)
    assert issues == []
    patients = {split: {r.patient_id for r in records if r.split == split} for split in ("train", "val", "valid")}
    assert patients["train"] and patients["val"]
    assert not patients["train"] & patients["val"]
    assert len(patients["train"]) + len(patients["val"]) == 60
    assert patients["valid"] == {"patient99999"}


def _reasons(issues, fragment):
    return [i for i in issues if fragment in i.reason]


def test_every_issue_kind_is_reported(tmp_path):
    base = make_mura(tmp_path)
    labels = base / "train_labeled_studies.csv"
    images = base / "train_image_paths.csv"
    # a labelled study with no images; a malformed label row; a wrong label value
    labels.write_text(
        labels.read_text()
        + "MURA-v1.1/train/XR_HAND/patient00009/study1_positive/,1\n"
        + "MURA-v1.1/train/XR_HAND/patient00003/study1_positive/\n"
        + "MURA-v1.1/train/XR_HAND/patient00003/study2_positive/,yes\n"
    )
    # an image listed but absent; a malformed image row
    images.write_text(
        images.read_text() + "MURA-v1.1/train/XR_HAND/patient00003/study1_positive/image7.png\nnot-a-path\n"
    )
    # an image in a study with no label row (kept, labelled from its folder)
    _png(base / "train/XR_FOREARM/patient00004/study1_negative/image1.png")
    # a CSV label that disagrees with the folder suffix: the CSV wins
    labels.write_text(labels.read_text().replace("patient00002/study1_negative/,0", "patient00002/study1_negative/,1"))
    # a missing split folder
    for path in sorted((base / "valid").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (base / "valid").rmdir()

    records, issues = load_mura(tmp_path, val_fraction=0.0)

    assert [i.path for i in _reasons(issues, "the study has no images")] == [
        str(base / "train/XR_HAND/patient00009/study1_positive")
    ]
    assert len(_reasons(issues, "malformed labeled-studies row")) == 2
    assert [i.path for i in _reasons(issues, "missing on disk")] == [
        str(base / "train/XR_HAND/patient00003/study1_positive/image7.png")
    ]
    assert len(_reasons(issues, "malformed image-paths row")) == 1
    orphan = base / "train/XR_FOREARM/patient00004/study1_negative/image1.png"
    assert [i.path for i in _reasons(issues, "no row in train_labeled_studies.csv")] == [str(orphan)]
    assert [i.path for i in _reasons(issues, "not listed in")] == [str(orphan)]
    disagree = _reasons(issues, "folder suffix says")
    assert [i.path for i in disagree] == [str(base / "train/XR_WRIST/patient00002/study1_negative")]
    assert [i.path for i in _reasons(issues, "split folder 'valid' is missing")] == [str(base / "valid")]

    rows = _by_path(records)
    assert rows["train/XR_FOREARM/patient00004/study1_negative/image1.png"].label == 0
    wrist = rows["train/XR_WRIST/patient00002/study1_negative/image1.png"]
    assert (wrist.label, wrist.fine_label) == (1, "positive")
    assert {r.split for r in records} == {"train"}
    assert len(records) == 8


def test_stray_files_and_unlabelled_folders_are_reported(tmp_path):
    base = make_mura(tmp_path, csvs=False)
    (base / "train/XR_HAND/patient00003/study1_positive/._image1.png").write_bytes(b"")
    (base / "train/XR_HAND/patient00003/study1_positive/notes.txt").write_text("x")
    _png(base / "train/XR_HAND/patient00003/study2/image1.png")  # no suffix, no CSV: no label at all
    (base / "train/XR_HAND/patient00003/study3_negative").mkdir()
    records, issues = load_mura(tmp_path, 0.0)
    assert len(_reasons(issues, "not an image file")) == 2
    assert len(_reasons(issues, "no _positive/_negative suffix")) == 1
    assert [i.path for i in _reasons(issues, "study folder has no images")] == [
        str(base / "train/XR_HAND/patient00003/study3_negative")
    ]
    assert len(records) == 10


def test_missing_root_is_an_issue(tmp_path):
    records, issues = load_mura(tmp_path / "nowhere")
    assert records == [] and len(issues) == 1


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "data", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_summary(tmp_path):
    base = make_mura(tmp_path)
    (base / "train_image_paths.csv").write_text(
        (base / "train_image_paths.csv").read_text()
        + "MURA-v1.1/train/XR_HAND/patient00003/study1_positive/image9.png\n"
    )
    done = _cli("mura", str(tmp_path), "--val-fraction", "0", "--summary")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["dataset"] == "mura"
    assert document["summary"]["total"]["images"] == 10
    assert document["summary"]["splits"]["valid"]["images"] == 3
    assert document["summary"]["splits"]["train"]["body_parts"]["SHOULDER"]["abnormal_images"] == 3
    assert document["issues_total"] == 1
    assert document["issues"][0]["path"].endswith("image9.png")
    assert "image9.png" in done.stderr


def test_cli_missing_root_and_usage_errors(tmp_path):
    done = _cli("mura", str(tmp_path / "nowhere"), "--summary")
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
    assert _cli("mura", str(tmp_path), "--preset", "knee-kl", "--summary").returncode == 2
    assert _cli("nosuch", str(tmp_path), "--summary").returncode == 2
