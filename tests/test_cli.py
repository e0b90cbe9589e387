"""The `python -m core.predict` contract: JSON shape, exit codes, overlays, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, png_bytes, synthetic_radiograph


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "core.predict", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    good = []
    for seed in range(2):
        path = folder / f"view{seed}.png"
        path.write_bytes(png_bytes(synthetic_radiograph(seed=seed)))
        good.append(path)
    bad = folder / "notes.png"
    bad.write_text("this is not an image")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    return good, [bad, empty]


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_all_scored_exit_0_and_json_shape(tiny_bundle, study, tmp_path):
    good, _ = study
    proc = run_cli("--bundle", str(tiny_bundle), "--gradcam-dir", str(tmp_path / "cams"), *map(str, good))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"model", "images", "study"}
    assert set(doc["model"]) == {"name", "version", "sha256", "threshold"}
    assert [img["file"] for img in doc["images"]] == ["view0.png", "view1.png"]
    probs = [img["probability"] for img in doc["images"]]
    assert all(0 < p < 1 for p in probs) and all(img["error"] is None for img in doc["images"])
    assert doc["study"]["probability"] == pytest.approx(sum(probs) / 2, abs=1e-5)
    assert doc["study"]["decision"] == (
        "abnormal" if doc["study"]["probability"] >= doc["model"]["threshold"] else "normal"
    )
    assert doc["study"]["scored"] == 2 and doc["study"]["rejected"] == 0
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["view0_gradcam.png", "view1_gradcam.png"]


def test_some_rejected_exit_3(tiny_bundle, study):
    good, bad = study
    proc = run_cli("--bundle", str(tiny_bundle), "--aggregate", "max", *map(str, good + bad))
    assert proc.returncode == 3
    assert_no_traceback(proc)
    doc = json.loads(proc.stdout)
    errors = {img["file"]: img["error"] for img in doc["images"]}
    assert errors["notes.png"] and "not a PNG, JPEG or DICOM" in errors["notes.png"]
    assert "empty" in errors["empty.jpg"]
    assert doc["study"]["aggregate"] == "max" and doc["study"]["rejected"] == 2
    assert doc["study"]["probability"] == pytest.approx(
        max(i["probability"] for i in doc["images"] if i["probability"])
    )


def test_none_scored_exit_4(tiny_bundle, study, tmp_path):
    _, bad = study
    proc = run_cli("--bundle", str(tiny_bundle), *map(str, bad), str(tmp_path / "missing.png"))
    assert proc.returncode == 4
    assert_no_traceback(proc)
    doc = json.loads(proc.stdout)
    assert doc["study"]["probability"] is None and doc["study"]["decision"] is None
    assert "cannot be read" in doc["images"][-1]["error"]


def test_usage_errors_exit_2(tiny_bundle, tmp_path):
    assert run_cli().returncode == 2
    bad_agg = run_cli("--bundle", str(tiny_bundle), "--aggregate", "median", "x.png")
    assert bad_agg.returncode == 2 and "invalid choice" in bad_agg.stderr
    missing = run_cli("--bundle", str(tmp_path / "nope"), "x.png")
    assert missing.returncode == 2 and "No model bundle" in missing.stderr
    assert_no_traceback(missing)


def test_real_knee_and_dicom(tiny_bundle, knee_files, dicom_dir):
    files = [str(knee_files[0]), str(dicom_dir / "RG3_UNCR.dcm")]
    proc = run_cli("--bundle", str(tiny_bundle), *files)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [img["file"] for img in doc["images"]] == [knee_files[0].name, "RG3_UNCR.dcm"]
    assert all(img["probability"] is not None for img in doc["images"])
