"""Prediction log: round trips, atomicity, concurrency, migration, privacy and History queries."""

from __future__ import annotations

import csv
import dataclasses
import io
import multiprocessing
import os
import signal
import sqlite3
import stat
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine

from dashboard import store
from dashboard.settings import PROJECT_ROOT, load_settings
from dashboard.store import (
    EXPORT_COLUMNS,
    HISTORY_COLUMNS,
    SCHEMA_VERSION,
    HistoryFilter,
    ImageInput,
    StoreError,
    StudyInput,
    add_review,
    agreement_stats,
    distinct_values,
    export_csv,
    get_study,
    hash_identifier,
    iter_export_csv,
    load_salt,
    make_engine,
    migrate,
    query_history,
    save_study,
)

SALT = bytes(range(32))
OTHER_SALT = bytes(range(1, 33))


def _image(i: int = 0, **overrides: object) -> ImageInput:
    values: dict[str, object] = {
        "file_name": f"img{i}.png",
        "file_sha256": f"{i:064x}",
        "probability": 0.25 + 0.1 * i,
        "error": None,
        "gate_status": "ok",
        "gate_reason": "",
        "share": 0.5,
        "source_format": "png",
        "width": 512,
        "height": 480,
        "thumbnail_png": b"\x89PNG-thumb-%d" % i,
        "overlay_png": b"\x89PNG-overlay-%d" % i,
    }
    values.update(overrides)
    return ImageInput(**values)  # type: ignore[arg-type]


def _study(
    identifier: str | None = "ACC-0001", images: tuple[ImageInput, ...] | None = None, **overrides: object
) -> StudyInput:
    values: dict[str, object] = {
        "identifier": identifier,
        "body_part": "knee",
        "note": "",
        "model_name": "densenet-knee",
        "model_version": "1.0.0",
        "model_sha256": "ab" * 32,
        "threshold": 0.5,
        "threshold_version": "t-2025-01",
        "aggregate": "mean",
        "probability": 0.6,
        "decision": "abnormal",
        "images": images if images is not None else (_image(0), _image(1)),
    }
    values.update(overrides)
    return StudyInput(**values)  # type: ignore[arg-type]


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(text(f"SELECT count(*) FROM {table}"))


def _at(day: str, clock: str = "12:00:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{clock}+00:00")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "log.sqlite3"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# --------------------------------------------------------------------------- settings


def test_settings_defaults() -> None:
    s = load_settings({})
    assert s.data_dir == PROJECT_ROOT / "var"
    assert s.database_url == f"sqlite:///{PROJECT_ROOT / 'var'}/bonesentinel.sqlite3"
    assert s.store_images is True
    assert s.salt_path == PROJECT_ROOT / "var" / "salt.key"
    assert s.bundle_dir is None and s.salt_override is None
    assert (s.max_files_per_study, s.max_file_mb) == (50, 50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.store_images = False  # type: ignore[misc]


def test_settings_from_env(tmp_path: Path) -> None:
    s = load_settings(
        {
            "BONESENTINEL_DATA_DIR": str(tmp_path),
            "BONESENTINEL_BUNDLE": str(tmp_path / "bundle"),
            "BONESENTINEL_SALT": "a-literal-salt-of-some-length",
        }
    )
    assert s.database_url == f"sqlite:///{tmp_path}/bonesentinel.sqlite3"
    assert s.salt_path == tmp_path / "salt.key"
    assert s.bundle_dir == tmp_path / "bundle"
    assert "a-literal-salt" not in repr(s)
    assert load_settings({"BONESENTINEL_DATABASE_URL": "postgresql://h/db"}).database_url == "postgresql://h/db"


@pytest.mark.parametrize(
    ("raw", "expected"), [("0", False), ("false", False), ("FALSE", False), ("1", True), ("", True)]
)
def test_settings_store_images_flag(raw: str, expected: bool) -> None:
    assert load_settings({"BONESENTINEL_STORE_IMAGES": raw}).store_images is expected


def test_settings_reject_unparseable_flag() -> None:
    with pytest.raises(ValueError, match="BONESENTINEL_STORE_IMAGES"):
        load_settings({"BONESENTINEL_STORE_IMAGES": "nope"})


# --------------------------------------------------------------------------- engine and schema


def test_fresh_database_is_configured_and_current(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.scalar(text("SELECT max(version) FROM schema_version")) == SCHEMA_VERSION
    insp = inspect(engine)
    assert {"studies", "images", "reviews", "schema_version"} <= set(insp.get_table_names())
    assert {ix["name"] for ix in insp.get_indexes("studies")} >= {
        "ix_studies_created_at",
        "ix_studies_body_part_created_at",
        "ix_studies_decision_created_at",
        "ix_studies_model_version",
    }
    assert "ix_reviews_study_id" in {ix["name"] for ix in insp.get_indexes("reviews")}
    assert migrate(engine) == SCHEMA_VERSION  # idempotent


def test_make_engine_creates_parent_directory(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'log.sqlite3'}")
    eng.dispose()
    assert (tmp_path / "a" / "b" / "log.sqlite3").is_file()


def test_deleting_a_study_cascades_to_images(engine: Engine) -> None:
    sid = save_study(engine, _study(), salt=SALT)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM studies WHERE id = :id"), {"id": sid})
    assert _count(engine, "images") == 0


# --------------------------------------------------------------------------- writes


def test_round_trip_with_images_and_blobs(engine: Engine) -> None:
    images = (
        _image(0),
        _image(1, gate_status="warn", gate_reason="low contrast"),
        _image(2, probability=None, gate_status="reject", gate_reason="not a radiograph", thumbnail_png=None),
        _image(3, probability=None, error="cannot decode", gate_status="error", overlay_png=None),
    )
    study = _study(images=images, body_part="hand", note="Ödem – «dist.»", aggregate="max", probability=0.35)
    before = datetime.now(UTC)
    sid = save_study(engine, study, salt=SALT)
    engine.dispose()  # the record must not depend on a live session
    record = get_study(engine, sid)
    assert record is not None and record.id == sid
    for name in ("body_part", "note", "model_name", "model_version", "model_sha256", "threshold"):
        assert getattr(record, name) == getattr(study, name)
    assert (record.threshold_version, record.aggregate, record.probability, record.decision) == (
        "t-2025-01",
        "max",
        0.35,
        "abnormal",
    )
    assert (record.n_images, record.n_scored, record.n_rejected, record.n_warned) == (4, 2, 2, 1)
    assert record.created_at.tzinfo is not None and record.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= record.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert record.identifier_hash == hash_identifier("ACC-0001", SALT)
    assert [img.position for img in record.images] == [0, 1, 2, 3]
    for stored, given_image in zip(record.images, images, strict=True):
        for f in dataclasses.fields(ImageInput):
            assert getattr(stored, f.name) == getattr(given_image, f.name), f.name
    assert record.reviews == () and record.latest_review is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.note = "x"  # type: ignore[misc]


def test_missing_study_is_none(engine: Engine) -> None:
    assert get_study(engine, 12345) is None


def test_store_images_false_drops_blobs(engine: Engine) -> None:
    sid = save_study(engine, _study(), salt=SALT, store_images=False)
    record = get_study(engine, sid)
    assert record is not None and len(record.images) == 2
    assert all(img.thumbnail_png is None and img.overlay_png is None for img in record.images)
    assert [img.file_sha256 for img in record.images] == [f"{0:064x}", f"{1:064x}"]
    with engine.connect() as conn:
        assert (
            conn.scalar(text("SELECT count(*) FROM images WHERE thumbnail_png IS NOT NULL OR overlay_png IS NOT NULL"))
            == 0
        )


def test_blank_identifier_is_not_hashed(engine: Engine) -> None:
    sid = save_study(engine, _study(identifier="   "), salt=b"")
    assert get_study(engine, sid).identifier_hash is None  # type: ignore[union-attr]


def test_identifier_without_salt_is_refused(engine: Engine) -> None:
    with pytest.raises(StoreError, match="salt"):
        save_study(engine, _study(identifier="ACC-1"), salt=b"")
    assert _count(engine, "studies") == 0


def test_failed_image_insert_leaves_nothing(engine: Engine) -> None:
    # The study row is written first; the second image violates NOT NULL afterwards.
    bad = _study(images=(_image(0), _image(1, file_sha256=None)))
    with pytest.raises(StoreError, match="refused") as info:
        save_study(engine, bad, salt=SALT)
    assert "INSERT" not in str(info.value) and "Traceback" not in str(info.value)
    assert _count(engine, "studies") == 0 and _count(engine, "images") == 0


def test_failure_after_study_insert_rolls_back(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def explode(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        seen.append(statement)
        if statement.lstrip().upper().startswith("INSERT INTO IMAGES"):
            raise RuntimeError("injected failure")

    event.listen(engine, "after_cursor_execute", explode)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            save_study(engine, _study(), salt=SALT)
    finally:
        event.remove(engine, "after_cursor_execute", explode)
    assert any(s.lstrip().upper().startswith("INSERT INTO STUDIES") for s in seen)
    assert _count(engine, "studies") == 0 and _count(engine, "images") == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"aggregate": "median"},
        {"decision": "maybe"},
        {"threshold": float("nan")},
        {"probability": 1.5},
        {"images": (_image(0, gate_status="fine"),)},
        {"images": (_image(0, probability=-0.1),)},
    ],
)
def test_invalid_study_is_refused(engine: Engine, overrides: dict[str, object]) -> None:
    with pytest.raises(StoreError):
        save_study(engine, _study(**overrides), salt=SALT)  # type: ignore[arg-type]
    assert _count(engine, "studies") == 0


def test_busy_database_retries_then_gives_a_readable_error(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eng = make_engine(f"sqlite:///{db_path}", busy_timeout_s=0.05)
    locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(store, "_RETRY_DELAYS_S", (0.01, 0.01))
    with pytest.raises(StoreError, match="busy") as info:
        save_study(eng, _study(), salt=SALT)
    assert "sqlite3" not in str(info.value) and "INSERT" not in str(info.value)

    # Lock released while the store is backing off: a retry, not busy_timeout, must save it.
    monkeypatch.setattr(store, "_RETRY_DELAYS_S", (0.4, 0.4, 0.4))
    timer = threading.Timer(0.2, locker.execute, args=("ROLLBACK",))
    timer.start()
    try:
        save_study(eng, _study(), salt=SALT)
    finally:
        timer.join()
        locker.close()
    assert _count(eng, "studies") == 1 and _count(eng, "images") == 2
    eng.dispose()


def test_writer_holds_the_lock_from_its_first_read(engine: Engine, db_path: Path) -> None:
    # A writer that read under a plain deferred BEGIN could not upgrade to writing once another
    # process had committed (SQLITE_BUSY without waiting); holding the lock from BEGIN avoids that.
    sid = save_study(engine, _study(), salt=SALT)
    outcome: list[str] = []

    def probe(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT STUDIES.ID") and not outcome:
            other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                outcome.append("other writer got in")
            except sqlite3.OperationalError as exc:
                outcome.append(str(exc))
            finally:
                other.close()

    event.listen(engine, "after_cursor_execute", probe)
    try:
        add_review(engine, sid, reviewer="dr a", agree=True, true_label="abnormal", comment="")
    finally:
        event.remove(engine, "after_cursor_execute", probe)
    assert outcome == ["database is locked"]


_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)


@pytest.fixture(scope="module")
def text_engine(tmp_path_factory: pytest.TempPathFactory):
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('text') / 'log.sqlite3'}")
    yield eng
    eng.dispose()


@settings(max_examples=25, deadline=None)
@given(note=_TEXT, file_name=_TEXT, body_part=_TEXT)
def test_any_text_round_trips_through_store_and_csv(
    text_engine: Engine, note: str, file_name: str, body_part: str
) -> None:
    sid = save_study(
        text_engine, _study(note=note, body_part=body_part, images=(_image(0, file_name=file_name),)), salt=SALT
    )
    record = get_study(text_engine, sid)
    assert record is not None
    assert (record.note, record.body_part, record.images[0].file_name) == (note, body_part, file_name)
    data = export_csv(text_engine, HistoryFilter(body_part=body_part))
    rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))}
    expected = "'" + note if note[:1] in ("=", "+", "-", "@", "\t", "\r") else note
    assert rows[sid]["note"] == expected


# --------------------------------------------------------------------------- processes


def _write_many(url: str, worker: int, count: int) -> None:
    eng = make_engine(url)
    for i in range(count):
        save_study(eng, _study(f"W{worker}-{i}", body_part=f"part{worker}"), salt=SALT)
    eng.dispose()


def _save_then_hang(url: str, inside: multiprocessing.synchronize.Event) -> None:
    eng = make_engine(url)

    def hang(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO IMAGES"):
            inside.set()
            time.sleep(600)

    event.listen(eng, "after_cursor_execute", hang)
    save_study(eng, _study("KILLED", images=(_image(0), _image(1), _image(2))), salt=SALT)


def test_concurrent_writer_processes(db_url: str) -> None:
    # Workers also race to create the schema on a database that does not exist yet.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(db_url, w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    eng = make_engine(db_url)
    assert _count(eng, "studies") == 400 and _count(eng, "images") == 800
    with eng.connect() as conn:
        per_worker = conn.execute(text("SELECT body_part, count(*) FROM studies GROUP BY body_part")).all()
        assert sorted(per_worker) == [(f"part{w}", 50) for w in range(8)]
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert conn.scalar(text("SELECT count(*) FROM schema_version")) == 1
    eng.dispose()


def test_killed_writer_leaves_no_partial_study(engine: Engine, db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    inside = ctx.Event()
    proc = ctx.Process(target=_save_then_hang, args=(db_url, inside))
    proc.start()
    try:
        assert inside.wait(60), "writer never reached the image insert"
        assert _count(engine, "studies") == 0  # not visible before commit either
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert _count(engine, "studies") == 0 and _count(engine, "images") == 0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    # The dead writer's lock went with it.
    sid = save_study(engine, _study(), salt=SALT)
    assert _count(engine, "studies") == 1 and len(get_study(engine, sid).images) == 2  # type: ignore[union-attr]


# --------------------------------------------------------------------------- migration

# Frozen copy of the version-1 schema as the v1 code created it on SQLite.
V1_DDL = """
CREATE TABLE studies (
    id INTEGER NOT NULL PRIMARY KEY,
    created_at DATETIME NOT NULL,
    identifier_hash VARCHAR(64),
    body_part VARCHAR(64),
    note TEXT NOT NULL,
    model_name VARCHAR(200) NOT NULL,
    model_version VARCHAR(100) NOT NULL,
    model_sha256 VARCHAR(64) NOT NULL,
    threshold FLOAT NOT NULL,
    threshold_version VARCHAR(100) NOT NULL,
    aggregate VARCHAR(8) NOT NULL,
    probability FLOAT,
    decision VARCHAR(16),
    n_images INTEGER NOT NULL,
    n_scored INTEGER NOT NULL,
    n_rejected INTEGER NOT NULL,
    CONSTRAINT ck_studies_aggregate CHECK (aggregate IN ('mean', 'max')),
    CONSTRAINT ck_studies_decision CHECK (decision IS NULL OR decision IN ('abnormal', 'normal'))
);
CREATE INDEX ix_studies_created_at ON studies (created_at);
CREATE INDEX ix_studies_body_part_created_at ON studies (body_part, created_at);
CREATE INDEX ix_studies_decision_created_at ON studies (decision, created_at);
CREATE INDEX ix_studies_model_version ON studies (model_version);
CREATE TABLE images (
    id INTEGER NOT NULL PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    file_name TEXT NOT NULL,
    file_sha256 VARCHAR(64) NOT NULL,
    probability FLOAT,
    error TEXT,
    share FLOAT,
    source_format VARCHAR(32),
    width INTEGER,
    height INTEGER,
    thumbnail_png BLOB,
    overlay_png BLOB,
    CONSTRAINT uq_images_study_position UNIQUE (study_id, position)
);
CREATE TABLE reviews (
    id INTEGER NOT NULL PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    created_at DATETIME NOT NULL,
    reviewer VARCHAR(200) NOT NULL,
    agree BOOLEAN NOT NULL,
    true_label VARCHAR(16) NOT NULL,
    comment TEXT NOT NULL,
    CONSTRAINT ck_reviews_true_label CHECK (true_label IN ('abnormal', 'normal'))
);
CREATE INDEX ix_reviews_study_id ON reviews (study_id, id);
CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at DATETIME NOT NULL);
INSERT INTO schema_version VALUES (1, '2025-01-01 00:00:00.000000');
INSERT INTO studies VALUES
    (1, '2025-01-02 08:00:00.000000', NULL, 'knee', 'old note', 'm', '0.9', 'aa', 0.5, 't0', 'mean', 0.7, 'abnormal', 2, 1, 0),
    (2, '2025-01-03 09:30:00.000000', 'ff', 'hand', '', 'm', '0.9', 'aa', 0.5, 't0', 'max', 0.2, 'normal', 1, 1, 0);
INSERT INTO images VALUES
    (1, 1, 0, 'a.png', 'h1', 0.7, NULL, 1.0, 'png', 10, 20, X'89504E47', X'0102'),
    (2, 1, 1, 'b.dcm', 'h2', NULL, 'cannot decode', NULL, 'dicom', NULL, NULL, NULL, NULL),
    (3, 2, 0, 'c.png', 'h3', 0.2, NULL, 1.0, 'png', 30, 40, NULL, NULL);
INSERT INTO reviews VALUES (1, 1, '2025-01-04 10:00:00.000000', 'dr a', 1, 'abnormal', 'ok');
"""


def _create_v1_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_DDL)
    conn.commit()
    conn.close()


def _columns(path: Path, table: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    finally:
        conn.close()


def test_upgrade_from_v1_keeps_rows_and_adds_columns(db_path: Path, db_url: str) -> None:
    _create_v1_database(db_path)
    assert "n_warned" not in _columns(db_path, "studies")
    eng = make_engine(db_url)
    assert {"gate_status", "gate_reason"} <= _columns(db_path, "images")
    with eng.connect() as conn:
        assert conn.scalars(text("SELECT version FROM schema_version ORDER BY version")).all() == [1, 2]
    first, second = get_study(eng, 1), get_study(eng, 2)
    assert first is not None and second is not None
    assert (first.note, first.body_part, first.decision, first.n_images, first.n_warned) == (
        "old note",
        "knee",
        "abnormal",
        2,
        0,
    )
    assert first.created_at == _at("2025-01-02", "08:00:00")
    assert [(i.file_name, i.gate_status, i.gate_reason) for i in first.images] == [
        ("a.png", "ok", ""),
        ("b.dcm", "error", "cannot decode"),
    ]
    assert first.images[0].thumbnail_png == b"\x89PNG" and first.images[0].overlay_png == b"\x01\x02"
    assert [(r.reviewer, r.agree, r.true_label) for r in first.reviews] == [("dr a", True, "abnormal")]
    assert (second.identifier_hash, second.aggregate, second.n_warned) == ("ff", "max", 0)
    # The upgraded database behaves like a new one.
    sid = save_study(eng, _study(images=(_image(0, gate_status="warn"),)), salt=SALT)
    assert get_study(eng, sid).n_warned == 1  # type: ignore[union-attr]
    frame, total = query_history(eng, HistoryFilter(reviewed=True), 1)
    assert total == 1 and frame["id"].tolist() == [1]
    with pytest.raises(StoreError):  # the CHECK added by the upgrade is enforced
        save_study(eng, _study(images=(_image(0, gate_status="bogus"),)), salt=SALT)
    eng.dispose()


def test_failed_upgrade_changes_nothing(db_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = store._UPGRADES[2]

    def half_then_crash(conn) -> None:  # noqa: ANN001
        real_step(conn)
        raise RuntimeError("crash during upgrade")

    _create_v1_database(db_path)
    monkeypatch.setitem(store._UPGRADES, 2, half_then_crash)
    with pytest.raises(RuntimeError, match="crash during upgrade"):
        make_engine(db_url)
    assert "n_warned" not in _columns(db_path, "studies")
    assert "gate_status" not in _columns(db_path, "images")
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM images").fetchone() == (3,)
    conn.close()
    monkeypatch.setitem(store._UPGRADES, 2, real_step)
    make_engine(db_url).dispose()
    assert "n_warned" in _columns(db_path, "studies")


def test_newer_schema_is_refused(db_path: Path, db_url: str) -> None:
    make_engine(db_url).dispose()
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_version VALUES (?, '2030-01-01 00:00:00')", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        make_engine(db_url)


# --------------------------------------------------------------------------- privacy


def test_identifier_never_stored_in_clear(tmp_path: Path, db_url: str, db_path: Path) -> None:
    identifier = "PAT-12345-DOE^JOHN"
    study = _study(identifier=identifier)
    assert "DOE" not in repr(study)
    eng = make_engine(db_url)
    first = save_study(eng, study, salt=SALT)
    second = save_study(eng, _study(identifier=f"  {identifier} "), salt=SALT)
    third = save_study(eng, study, salt=OTHER_SALT)
    hashes = [get_study(eng, sid).identifier_hash for sid in (first, second, third)]  # type: ignore[union-attr]
    assert hashes[0] == hashes[1] == hash_identifier(identifier, SALT)
    assert hashes[2] == hash_identifier(identifier, OTHER_SALT) != hashes[0]
    for stage in ("before checkpoint", "after checkpoint"):
        files = [p for p in tmp_path.iterdir() if p.name.startswith(db_path.name)]
        assert db_path in files
        for path in files:
            raw = path.read_bytes()
            for needle in (b"PAT-12345", b"DOE", b"JOHN"):
                assert needle not in raw, f"{needle!r} found in {path.name} {stage}"
        with eng.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()


def test_hash_identifier() -> None:
    digest = hash_identifier("PAT-12345-DOE^JOHN", SALT)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest == hash_identifier("PAT-12345-DOE^JOHN", SALT)
    assert digest != hash_identifier("PAT-12345-DOE^JOHN", OTHER_SALT)
    assert digest != hash_identifier("PAT-12346-DOE^JOHN", SALT)
    # Same id typed in composed or decomposed Unicode form links to the same studies.
    assert hash_identifier("M\u00fcller-1", SALT) == hash_identifier("Mu\u0308ller-1", SALT)
    with pytest.raises(ValueError):
        hash_identifier("x", b"short")


def test_load_salt_creates_private_file_once(tmp_path: Path) -> None:
    s = load_settings({"BONESENTINEL_DATA_DIR": str(tmp_path / "data")})
    salt = load_salt(s)
    assert len(salt) == 32
    assert stat.S_IMODE(s.salt_path.stat().st_mode) == 0o600
    assert load_salt(s) == salt
    assert [p.name for p in s.salt_path.parent.iterdir()] == ["salt.key"]  # no temp files left
    other = load_settings({"BONESENTINEL_DATA_DIR": str(tmp_path / "other")})
    assert load_salt(other) != salt


def test_load_salt_env_override_and_damage(tmp_path: Path) -> None:
    s = load_settings({"BONESENTINEL_DATA_DIR": str(tmp_path), "BONESENTINEL_SALT": "0123456789abcdef-literal"})
    assert load_salt(s) == b"0123456789abcdef-literal"
    assert not s.salt_path.exists()
    with pytest.raises(StoreError, match="too short"):
        load_salt(dataclasses.replace(s, salt_override="short"))
    s.salt_path.write_bytes(b"abc")
    with pytest.raises(StoreError, match="damaged"):
        load_salt(dataclasses.replace(s, salt_override=None))


# --------------------------------------------------------------------------- History

# id -> (created_at, body_part, decision, model_version); ids follow insertion order.
HISTORY = {
    1: (_at("2025-01-01", "10:00:00"), "knee", "abnormal", "v1"),
    2: (_at("2025-01-02", "23:59:59"), "knee", "normal", "v1"),
    3: (_at("2025-01-03", "00:00:00"), "hand", "abnormal", "v2"),
    4: (_at("2025-01-05", "08:00:00"), None, None, "v2"),
    5: (_at("2025-01-05", "12:00:00"), "hand", "normal", "v2"),
    6: (_at("2025-01-01", "10:00:00"), "knee", "normal", "v1"),  # same instant as 1: id breaks the tie
}
# study id -> agree values of its reviews, oldest first
REVIEWS = {1: [True], 3: [True, False], 5: [True]}
NOTES = {2: '=HYPERLINK("http://x")', 5: "Ödem, «dist.»\nzweite Zeile"}


@pytest.fixture(scope="module")
def history_engine(tmp_path_factory: pytest.TempPathFactory):
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('history') / 'log.sqlite3'}")
    for sid, (when, body_part, decision, version) in HISTORY.items():
        probability = None if decision is None else (0.8 if decision == "abnormal" else 0.1)
        study = _study(
            f"P{sid}",
            body_part=body_part,
            decision=decision,
            probability=probability,
            model_version=version,
            note=NOTES.get(sid, ""),
            images=(_image(0), _image(1, gate_status="warn"), _image(2, gate_status="reject", probability=None)),
        )
        assert save_study(eng, study, salt=SALT, created_at=when) == sid
    for sid, verdicts in REVIEWS.items():
        for agree in verdicts:
            label = HISTORY[sid][2] if agree else "normal"
            add_review(eng, sid, reviewer="dr b", agree=agree, true_label=label, comment="")
    yield eng
    eng.dispose()


NEWEST_FIRST = [5, 4, 3, 2, 6, 1]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (HistoryFilter(), NEWEST_FIRST),
        (HistoryFilter(date_from=date(2025, 1, 2), date_to=date(2025, 1, 3)), [3, 2]),
        (HistoryFilter(date_to=date(2025, 1, 2)), [2, 6, 1]),
        (HistoryFilter(date_from=date(2025, 1, 4)), [5, 4]),
        (HistoryFilter(date_from=date(2025, 1, 4), date_to=date(2025, 1, 4)), []),
        (HistoryFilter(body_part="knee"), [2, 6, 1]),
        (HistoryFilter(decision="abnormal"), [3, 1]),
        (HistoryFilter(reviewed=True), [5, 3, 1]),
        (HistoryFilter(reviewed=False), [4, 2, 6]),
        (HistoryFilter(model_version="v2"), [5, 4, 3]),
        (HistoryFilter(body_part="hand", decision="normal", reviewed=True, model_version="v2"), [5]),
        (HistoryFilter(body_part="foot"), []),
    ],
)
def test_query_history_filters(history_engine: Engine, flt: HistoryFilter, expected: list[int]) -> None:
    frame, total = query_history(history_engine, flt, page=1)
    assert list(frame.columns) == list(HISTORY_COLUMNS)
    assert frame["id"].tolist() == expected
    assert total == len(expected)


def test_query_history_values(history_engine: Engine) -> None:
    frame, _ = query_history(history_engine, HistoryFilter(), page=1)
    rows = frame.set_index("id")
    assert rows.loc[3, "agree"] is False  # latest review wins over the earlier agreement
    assert rows.loc[1, "agree"] is True and rows.loc[4, "agree"] is None
    assert rows["reviewed"].to_dict() == {5: True, 4: False, 3: True, 2: False, 6: False, 1: True}
    assert rows.loc[2, "created_at"] == _at("2025-01-02", "23:59:59")
    assert str(rows["created_at"].dt.tz) == "UTC"
    assert (rows.loc[2, "n_images"], rows.loc[2, "n_rejected"], rows.loc[2, "n_warned"]) == (3, 1, 1)
    assert rows.loc[1, "probability"] == 0.8 and rows.loc[1, "threshold"] == 0.5
    assert rows.loc[3, "model_version"] == "v2"
    assert pd.isna(rows.loc[4, "decision"]) and pd.isna(rows.loc[4, "body_part"])
    assert pd.isna(rows.loc[4, "probability"])


@settings(max_examples=20, deadline=None)
@given(page_size=st.integers(min_value=1, max_value=7))
def test_pagination_covers_everything_once(history_engine: Engine, page_size: int) -> None:
    seen: list[int] = []
    page = 1
    while True:
        frame, total = query_history(history_engine, HistoryFilter(), page=page, page_size=page_size)
        assert total == len(HISTORY)
        assert len(frame) <= page_size
        if frame.empty:
            break
        seen += frame["id"].tolist()
        page += 1
    assert seen == NEWEST_FIRST
    assert page == -(-len(HISTORY) // page_size) + 1


def test_query_history_empty_page_keeps_columns_and_rejects_page_zero(history_engine: Engine) -> None:
    frame, total = query_history(history_engine, HistoryFilter(body_part="foot"), page=1)
    assert frame.empty and total == 0 and list(frame.columns) == list(HISTORY_COLUMNS)
    assert frame["reviewed"].dtype == bool and frame["id"].dtype == "int64"
    with pytest.raises(ValueError):
        query_history(history_engine, HistoryFilter(), page=0)


@pytest.mark.parametrize("flt", [HistoryFilter(), HistoryFilter(reviewed=True), HistoryFilter(body_part="knee")])
def test_export_csv_matches_history(history_engine: Engine, flt: HistoryFilter) -> None:
    data = export_csv(history_engine, flt)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    frame, total = query_history(history_engine, flt, page=1, page_size=1000)
    assert data.decode("utf-8").splitlines()[0] == ",".join(EXPORT_COLUMNS)
    assert [int(r["id"]) for r in rows] == frame["id"].tolist() and len(rows) == total
    for row, (_, expected) in zip(rows, frame.iterrows(), strict=True):
        assert datetime.fromisoformat(row["created_at"]) == expected["created_at"]
        assert row["decision"] == ("" if pd.isna(expected["decision"]) else expected["decision"])
        assert row["reviewed"] == str(expected["reviewed"])
        assert row["agree"] == ("" if expected["agree"] is None else str(expected["agree"]))
        if pd.isna(expected["probability"]):
            assert row["probability"] == ""
        else:
            assert float(row["probability"]) == expected["probability"]
    assert not {"identifier_hash", "thumbnail_png", "overlay_png"} & set(rows[0] if rows else EXPORT_COLUMNS)


def test_export_csv_content(history_engine: Engine) -> None:
    data = export_csv(history_engine, HistoryFilter())
    rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(data.decode("utf-8")))}
    assert rows[2]["note"].startswith("'=")  # neutralised spreadsheet formula
    assert rows[5]["note"] == NOTES[5]  # unicode and newlines survive quoting
    assert (rows[3]["agree"], rows[3]["true_label"]) == ("False", "normal")
    assert rows[4]["true_label"] == "" and rows[1]["model_sha256"] == "ab" * 32
    for sid in HISTORY:
        assert hash_identifier(f"P{sid}", SALT).encode() not in data
    chunks = list(iter_export_csv(history_engine, HistoryFilter(), chunk_rows=2))
    assert len(chunks) >= 4 and b"".join(chunks) == data


def test_agreement_and_distinct_on_history(history_engine: Engine) -> None:
    assert agreement_stats(history_engine, HistoryFilter()) == {"reviewed": 3, "agree": 2, "agreement_rate": 2 / 3}
    assert agreement_stats(history_engine, HistoryFilter(model_version="v2")) == {
        "reviewed": 2,
        "agree": 1,
        "agreement_rate": 0.5,
    }
    assert agreement_stats(history_engine, HistoryFilter(reviewed=False)) == {
        "reviewed": 0,
        "agree": 0,
        "agreement_rate": None,
    }
    assert distinct_values(history_engine) == {"body_parts": ["hand", "knee"], "model_versions": ["v1", "v2"]}


# --------------------------------------------------------------------------- reviews


def test_add_review_and_agreement_stats(engine: Engine) -> None:
    a, b, c, _d = (save_study(engine, _study(f"R{i}"), salt=SALT) for i in range(4))
    add_review(engine, a, reviewer="dr a", agree=True, true_label="abnormal", comment="")
    add_review(engine, b, reviewer="dr a", agree=False, true_label="normal", comment="soft tissue only")
    first = add_review(engine, c, reviewer="dr a", agree=False, true_label="normal", comment="")
    second = add_review(engine, c, reviewer=" dr c ", agree=True, true_label="abnormal", comment="on second look")
    assert second > first
    assert agreement_stats(engine, HistoryFilter()) == {"reviewed": 3, "agree": 2, "agreement_rate": 2 / 3}
    record = get_study(engine, c)
    assert record is not None
    assert [(r.reviewer, r.agree) for r in record.reviews] == [("dr a", False), ("dr c", True)]
    assert record.latest_review is not None and record.latest_review.comment == "on second look"
    assert record.latest_review.created_at.tzinfo is not None
    frame, _ = query_history(engine, HistoryFilter(reviewed=True), page=1)
    assert dict(zip(frame["id"], frame["agree"], strict=True)) == {c: True, b: False, a: True}


def test_add_review_refusals(engine: Engine) -> None:
    sid = save_study(engine, _study(), salt=SALT)
    with pytest.raises(StoreError, match="does not exist"):
        add_review(engine, sid + 99, reviewer="dr a", agree=True, true_label="normal", comment="")
    with pytest.raises(StoreError, match="label"):
        add_review(engine, sid, reviewer="dr a", agree=True, true_label="fracture", comment="")
    with pytest.raises(StoreError, match="reviewer"):
        add_review(engine, sid, reviewer="  ", agree=True, true_label="normal", comment="")
    assert _count(engine, "reviews") == 0


# --------------------------------------------------------------------------- scale


def _plan(engine: Engine, statement: str, parameters: object) -> str:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()  # type: ignore[arg-type]
    return "\n".join(str(row[-1]) for row in rows)


def test_history_stays_fast_at_100k_studies(engine: Engine) -> None:
    n = 100_000
    start = datetime(2024, 1, 1, tzinfo=UTC)
    parts, decisions, versions = (
        ("knee", "hand", "elbow", "wrist", None),
        ("abnormal", "normal", None),
        ("v1", "v2", "v3"),
    )
    rows = [
        {
            "created_at": start + timedelta(minutes=5 * i),
            "identifier_hash": None,
            "body_part": parts[i % 5],
            "note": "",
            "model_name": "m",
            "model_version": versions[i % 3],
            "model_sha256": "ab" * 32,
            "threshold": 0.5,
            "threshold_version": "t",
            "aggregate": "mean",
            "probability": None if i % 3 == 2 else 0.5,
            "decision": decisions[i % 3],
            "n_images": 1,
            "n_scored": 1,
            "n_rejected": 0,
            "n_warned": 0,
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(store.Study.__table__.insert(), rows)
        conn.execute(
            store.Review.__table__.insert(),
            [
                {
                    "study_id": sid,
                    "created_at": start,
                    "reviewer": "r",
                    "agree": sid % 2 == 0,
                    "true_label": "normal",
                    "comment": "",
                }
                for sid in range(1, n + 1, 20)
            ],
        )

    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "FROM studies" in statement and "count(" not in statement:
            statements.append((statement, parameters))

    filters = {
        "none": HistoryFilter(),
        "body part": HistoryFilter(body_part="hand"),
        "decision": HistoryFilter(decision="normal"),
        "dates": HistoryFilter(date_from=date(2024, 3, 1), date_to=date(2024, 3, 31)),
        "model": HistoryFilter(model_version="v2"),
        "reviewed": HistoryFilter(reviewed=True),
        "everything": HistoryFilter(date_from=date(2024, 2, 1), body_part="knee", decision="abnormal", reviewed=False),
    }
    event.listen(engine, "before_cursor_execute", capture)
    try:
        for name, flt in filters.items():
            began = time.perf_counter()
            frame, total = query_history(engine, flt, page=1)
            last, _ = query_history(engine, flt, page=max(1, -(-total // 50)))
            elapsed = time.perf_counter() - began
            assert len(frame) == min(50, total) and total > 0, name
            assert frame["created_at"].is_monotonic_decreasing and len(last) >= 1, name
            assert elapsed < 3.0, f"{name}: {elapsed:.2f}s for two pages"
    finally:
        event.remove(engine, "before_cursor_execute", capture)

    _, total = query_history(engine, HistoryFilter(date_from=date(2024, 3, 1), date_to=date(2024, 3, 31)), page=1)
    assert total == 31 * 24 * 12  # one study every five minutes
    _, total = query_history(engine, HistoryFilter(reviewed=True), page=1)
    assert total == n // 20
    for name, (statement, parameters) in zip(filters, statements[::2], strict=True):
        plan = _plan(engine, statement, parameters)
        assert "ix_studies_" in plan, f"{name}: {plan}"
        if name in ("none", "body part", "decision", "dates"):
            assert "TEMP B-TREE" not in plan, f"{name} sorts instead of walking the index: {plan}"
    began = time.perf_counter()
    assert agreement_stats(engine, HistoryFilter())["reviewed"] == n // 20
    assert time.perf_counter() - began < 3.0
