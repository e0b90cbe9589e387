"""ChestX-ray14 adapter on synthetic installs and on the real NIH label file."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from data.chestxray14 import load_chestxray14

ROOT = Path(__file__).resolve().parents[1]
REAL_LABELS = ROOT.parent / "shared/datasets/chestxray14/Data_Entry_2017_v2020.csv.gz"
HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
# (image, findings, follow-up, patient, view)
ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1, "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, "PA"),
    ("00000002_000.png", "No Finding", 0, 2, "PA"),
    ("00000003_000.png", "Hernia", 0, 3, "AP"),
    ("00000003_001.png", "No Finding", 1, 3, "AP"),
    ("00000004_000.png", "Mass|Nodule|Effusion", 0, 4, "PA"),
]


def write_labels(root: Path, rows=ROWS, name="Data_Entry_2017_v2020.csv", trailing_comma=False) -> Path:
    end = "," if trailing_comma else ""
    lines = [HEADER + end] + [f"{i},{f},{u},{p},58,M,{v},2682,2749,0.143,0.143{end}" for i, f, u, p, v in rows]
    text = "\n".join(lines) + "\n"
    path = root / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def write_images(root: Path, names, folder="images_001/images") -> None:
    for name in names:
        path = root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 64).save(path)


@pytest.mark.parametrize(
    ("name", "trailing_comma"),
    [
        ("Data_Entry_2017_v2020.csv", False),
        ("Data_Entry_2017.csv", True),
        ("Data_Entry_2017_v2020.csv.gz", False),
        ("Data_Entry_2017.csv.gz", True),
    ],
)
def test_labels_only_install(tmp_path, name, trailing_comma):
    write_labels(tmp_path, name=name, trailing_comma=trailing_comma)
    records, issues = load_chestxray14(tmp_path, val_fraction=0.0)
    assert issues == []
    assert len(records) == 6
    rows = {Path(r.image_path).name: r for r in records}
    assert rows["00000001_001.png"].image_path == str(tmp_path / "images" / "00000001_001.png")
    assert (rows["00000001_001.png"].label, rows["00000001_001.png"].fine_label) == (1, "Cardiomegaly|Emphysema")
    assert (rows["00000002_000.png"].label, rows["00000002_000.png"].fine_label) == (0, "No Finding")
    assert rows["00000003_001.png"].study_id == "3/1"
    assert rows["00000003_001.png"].patient_id == "3"
    assert {r.body_part for r in records} == {"CHEST"}
    assert {r.split for r in records} == {"train"}
    assert sum(r.label for r in records) == 4


def test_official_lists_images_and_view_filter(tmp_path):
    write_labels(tmp_path)
    write_images(tmp_path, [r[0] for r in ROWS[:3]], "images_001/images")
    write_images(tmp_path, [r[0] for r in ROWS[3:]], "images_002/images")
    (tmp_path / "test_list.txt").write_text("00000003_000.png\n00000003_001.png\n")
    (tmp_path / "train_val_list.txt").write_text("\n".join(r[0] for r in ROWS[:3] + ROWS[5:]) + "\n")
    records, issues = load_chestxray14(tmp_path, val_fraction=0.0)
    assert issues == []
    splits = {Path(r.image_path).name: r.split for r in records}
    assert splits == {r[0]: "test" if r[3] == 3 else "train" for r in ROWS}
    assert Path(next(r.image_path for r in records if r.patient_id == "4")).parent == tmp_path / "images_002/images"

    pa, issues = load_chestxray14(tmp_path, val_fraction=0.0, view_position="pa")
    assert issues == []  # images of filtered-out rows are still labelled, so not reported
    assert sorted(Path(r.image_path).name for r in pa) == sorted(r[0] for r in ROWS if r[4] == "PA")


def test_every_issue_kind_is_reported(tmp_path):
    labels = write_labels(tmp_path)
    labels.write_text(
        labels.read_text() + "00000009_000.png,No Finding,0\n" + ROWS[0][0] + ",No Finding,0,1,1,M,PA,1,1,1,1\n"
    )
    write_images(tmp_path, [r[0] for r in ROWS if r[0] != "00000004_000.png"] + ["00000099_000.png"])
    write_images(tmp_path, ["00000002_000.png"], "images_002/images")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n00000077_000.png\n")
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")

    records, issues = load_chestxray14(tmp_path, val_fraction=0.0)
    reasons = [i.reason for i in issues]

    def one(fragment):
        found = [i for i in issues if fragment in i.reason]
        assert len(found) == 1, (fragment, reasons)
        return found[0]

    assert one("malformed row").path == f"{labels}:8"
    assert one("duplicate row").path == f"{labels}:9"
    assert one("label row but no image").path == str(tmp_path / "00000004_000.png")
    assert one("image has no row").path.endswith("00000099_000.png")
    assert one("duplicate image name").path == str(tmp_path / "images_002/images/00000002_000.png")
    assert one("in neither").path.endswith("00000003_001.png")
    assert "00000077_000.png" in one("lists 00000077").reason
    assert len(issues) == 7
    assert len(records) == 5
    assert next(r for r in records if r.patient_id == "2").split == "test"


def test_bad_installs(tmp_path):
    assert load_chestxray14(tmp_path / "nowhere")[1][0].reason == "dataset folder does not exist"
    records, issues = load_chestxray14(tmp_path)
    assert records == [] and "no label file" in issues[0].reason
    (tmp_path / "Data_Entry_2017.csv").write_text("a,b,c\n1,2,3\n")
    records, issues = load_chestxray14(tmp_path)
    assert records == [] and "unexpected header" in issues[0].reason


def test_val_is_patient_disjoint(tmp_path):
    rows = [
        (f"{p:08d}_{u:03d}.png", "No Finding" if u else "Atelectasis", u, p, "PA")
        for p in range(1, 80)
        for u in range(3)
    ]
    write_labels(tmp_path, rows)
    records, issues = load_chestxray14(tmp_path, val_fraction=0.25)
    assert issues == []
    train = {r.patient_id for r in records if r.split == "train"}
    val = {r.patient_id for r in records if r.split == "val"}
    assert train and val and not train & val
    assert len(train | val) == 79


def test_cli_summary(tmp_path):
    write_labels(tmp_path)
    write_images(tmp_path, [r[0] for r in ROWS[1:]])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "data",
            "chestxray14",
            str(tmp_path),
            "--view-position",
            "PA",
            "--val-fraction",
            "0",
            "--summary",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["summary"]["total"] == {"images": 3, "studies": 3, "patients": 3, "abnormal_images": 2}
    assert document["issues_total"] == 1
    assert document["issues"] == [
        {"path": str(tmp_path / "00000001_000.png"), "reason": "label row but no image under images*/"}
    ]
    assert "00000001_000.png" in done.stderr


def test_real_label_file(tmp_path):
    if not REAL_LABELS.is_file():
        pytest.skip(f"../shared/datasets not present: {REAL_LABELS} is missing")
    (tmp_path / REAL_LABELS.name).symlink_to(REAL_LABELS)
    with gzip.open(REAL_LABELS, "rt", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    expected_abnormal = sum(row[1] != "No Finding" for row in rows)

    started = time.perf_counter()
    records, issues = load_chestxray14(tmp_path)
    assert time.perf_counter() - started < 10
    assert issues == []
    assert len(records) == len(rows) == 112_120
    assert len({r.patient_id for r in records}) == 30_805
    assert sum(r.label for r in records) == expected_abnormal
    assert all(r.image_path.startswith(str(tmp_path / "images")) for r in records[:10])
    train = {r.patient_id for r in records if r.split == "train"}
    val = {r.patient_id for r in records if r.split == "val"}
    assert train and val and not train & val
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15
