"""Class-folder adapter with the knee KL preset, on a synthetic tree and the real knee-kl set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from data.folders import KNEE_KL, load_folders

ROOT = Path(__file__).resolve().parents[1]
REAL_KNEE = ROOT.parent / "shared/datasets/knee-kl"


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 200).save(path)


def make_knee(root: Path) -> Path:
    for split, grade, name in [
        ("train", "0", "9003126L.png"),
        ("train", "1", "9003126R.png"),
        ("train", "2", "9001695L.png"),
        ("train", "3", "9001897R.png"),
        ("train", "4", "9002116L.png"),
        ("val", "0", "9005000L.png"),
        ("val", "4", "9005000R.png"),
    ]:
        _png(root / split / grade / name)
    return root


def test_knee_preset_labels_and_ids(tmp_path):
    make_knee(tmp_path)
    records, issues = load_folders(tmp_path, KNEE_KL)
    assert issues == []
    rows = {Path(r.image_path).name: r for r in records}
    assert {name: r.label for name, r in rows.items() if r.split == "train"} == {
        "9003126L.png": 0,
        "9003126R.png": 0,
        "9001695L.png": 1,
        "9001897R.png": 1,
        "9002116L.png": 1,
    }
    knee = rows["9003126L.png"]
    assert (knee.patient_id, knee.body_part, knee.fine_label, knee.split) == ("9003126", "KNEE", "0", "train")
    assert knee.study_id == "train/9003126L"
    assert rows["9003126R.png"].patient_id == "9003126"
    assert sum(r.split == "val" for r in records) == 2


def test_unknown_class_and_stray_file_are_reported(tmp_path):
    make_knee(tmp_path)
    _png(tmp_path / "train" / "5" / "9009999L.png")
    (tmp_path / "train" / "2" / "readme.txt").write_text("x")
    records, issues = load_folders(tmp_path, KNEE_KL)
    assert [i.path for i in issues if "no label mapping" in i.reason] == [str(tmp_path / "train" / "5")]
    assert [i.path for i in issues if "not an image" in i.reason] == [str(tmp_path / "train" / "2" / "readme.txt")]
    assert len(issues) == 2 and len(records) == 7


def test_cli_summary(tmp_path):
    make_knee(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "data", "folders", str(tmp_path), "--preset", "knee-kl", "--summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["dataset"] == "folders" and document["issues"] == [] and document["issues_total"] == 0
    assert document["summary"]["splits"]["train"]["images"] == 5
    assert document["summary"]["splits"]["train"]["abnormal_images"] == 3
    assert document["summary"]["splits"]["val"]["patients"] == 1


def test_real_knee_kl():
    if not REAL_KNEE.is_dir():
        pytest.skip(f"../shared/datasets not present: {REAL_KNEE} is missing")
    records, issues = load_folders(REAL_KNEE, KNEE_KL)
    assert issues == []
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    assert (len(train), len(val)) == (5778, 826)
    assert len({r.patient_id for r in train}) == 2889 and len({r.patient_id for r in val}) == 413
    assert not {r.patient_id for r in train} & {r.patient_id for r in val}
    assert sum(r.label for r in train) == 1516 + 757 + 173
    assert {r.body_part for r in records} == {"KNEE"}
