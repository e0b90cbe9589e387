"""Patient identifiers in a DICOM header never reach the database, the CLI's output or the logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import ROOT

SALT = b"x" * 32
PATIENT_ID = "PID-778899"
# Everything identifying in the test file, and the fragments a partial leak would show.
SECRETS = ("DOE^JANE", "DOE", "JANE", PATIENT_ID, "778899", "19450317")


@pytest.fixture(scope="module")
def identified_dicom(dicom_dir: Path, tmp_path_factory) -> Path:
    """RG3 (a real extremity CR) carrying a name, an id, a birth date and a malformed study UID."""
    import pydicom

    ds = pydicom.dcmread(dicom_dir / "RG3_UNCR.dcm")
    ds.PatientName = "DOE^JANE"
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19450317"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid on purpose: pydicom's validation warning quotes the value
        ds.StudyInstanceUID = "1.2.3.778899.X"
    path = tmp_path_factory.mktemp("phi") / "study.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    assert all(secret.encode() in raw for secret in SECRETS)  # the file itself does carry them
    return path


def leaks(text: str | bytes, allowed: dict[str, int] | None = None) -> list[str]:
    """The secrets found in ``text``, beyond ``allowed`` chance occurrences (e.g. inside PNG blobs)."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    allowed = allowed or {}
    return [s for s in SECRETS if data.count(s.encode()) > allowed.get(s, 0)]


def test_dashboard_log_stores_only_a_salted_hash(
    tiny_predictor, identified_dicom: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import text

    from dashboard.service import StudyForm, analyze_study
    from dashboard.store import HistoryFilter, export_csv, get_study, hash_identifier, make_engine

    caplog.set_level(logging.DEBUG)
    database = tmp_path / "db.sqlite3"
    engine = make_engine(f"sqlite:///{database}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome = analyze_study(
                tiny_predictor,
                [(identified_dicom.name, identified_dicom.read_bytes())],
                StudyForm(),
                engine=engine,
                salt=SALT,
            )
        assert outcome.log_error is None and len(outcome.scored) == 1
        record = get_study(engine, outcome.study_id)
        # The DICOM PatientID was used as the identifier, and only its salted hash was kept.
        assert record.identifier_hash == hash_identifier(PATIENT_ID, SALT)
        exported = export_csv(engine, HistoryFilter())
        with engine.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(FULL)"))
            blobs = conn.execute(text("SELECT thumbnail_png, overlay_png FROM images")).all()
    finally:
        engine.dispose()

    # Compressed PNG blobs may hold a short token like "DOE" by chance; only more than that is a leak.
    chance = {s: sum((blob or b"").count(s.encode()) for row in blobs for blob in row) for s in SECRETS}
    files = [database, *(Path(f"{database}{suffix}") for suffix in ("-wal", "-shm", "-journal"))]
    for path in files:
        if path.exists():
            assert leaks(path.read_bytes(), chance) == [], path.name
    assert leaks(exported) == []
    assert leaks(repr(outcome)) == []  # ImageMeta keeps patient_id and study_uid out of repr
    assert leaks(caplog.text) == [] and leaks(" ".join(r.getMessage() for r in caplog.records)) == []
    assert leaks(" ".join(str(w.message) for w in caught)) == []


def test_cli_output_has_no_identifiers(tiny_bundle: Path, identified_dicom: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "core.predict", "--bundle", str(tiny_bundle), str(identified_dicom)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"probability"' in proc.stdout and "study.dcm" in proc.stdout  # it did score the file
    assert leaks(proc.stdout) == [] and leaks(proc.stderr) == []
