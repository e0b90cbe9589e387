"""Prediction log: every scored study, its images and the clinicians' reviews of it.

SQLAlchemy 2.0 typed ORM. SQLite is the default; the same code runs on PostgreSQL given a
``postgresql://`` URL, because everything SQLite-specific lives in :func:`_configure_sqlite`.

Patient identifiers never reach the database: only an HMAC-SHA256 keyed with a salt that is
kept in a separate file (:func:`load_salt`), so the database alone cannot be linked to a patient.
Every error meant for the UI is a :class:`StoreError` whose ``str()`` is a readable sentence.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import math
import os
import random
import secrets
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    event,
    exists,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column, relationship, selectinload
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from core.errors import BoneSentinelError
from dashboard.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

SCHEMA_VERSION = 2
GATE_STATUSES = ("ok", "warn", "reject", "error")
DECISIONS = ("abnormal", "normal")
AGGREGATES = ("mean", "max")
LABELS = DECISIONS
MIN_SALT_BYTES = 16

HISTORY_COLUMNS = (
    "id",
    "created_at",
    "body_part",
    "decision",
    "probability",
    "n_images",
    "n_rejected",
    "n_warned",
    "model_version",
    "threshold",
    "reviewed",
    "agree",
)
_HISTORY_DTYPES = {
    "id": "int64",
    "body_part": "str",
    "decision": "str",
    "probability": "float64",
    "n_images": "int64",
    "n_rejected": "int64",
    "n_warned": "int64",
    "model_version": "str",
    "threshold": "float64",
    "reviewed": "bool",
    "agree": "object",  # True / False / None (no review yet)
}
EXPORT_COLUMNS = (
    "id",
    "created_at",
    "body_part",
    "decision",
    "probability",
    "threshold",
    "threshold_version",
    "aggregate",
    "n_images",
    "n_scored",
    "n_rejected",
    "n_warned",
    "model_name",
    "model_version",
    "model_sha256",
    "reviewed",
    "agree",
    "true_label",
    "note",
)

# Seconds to wait between attempts when the database stays locked past busy_timeout;
# module-level so tests can shorten them.
_RETRY_DELAYS_S: tuple[float, ...] = (0.1, 0.4, 1.0)
# Execution option marking a connection that will write (see _configure_sqlite).
_WRITE_OPTION = "bonesentinel_write"


class StoreError(BoneSentinelError):
    """The prediction log could not do what was asked; ``str()`` says why, for a person."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ImageInput:
    """One scored (or refused) file of a study, as the inference layer produced it."""

    file_name: str
    file_sha256: str
    probability: float | None
    error: str | None
    gate_status: str
    gate_reason: str
    share: float | None
    source_format: str | None
    width: int | None
    height: int | None
    thumbnail_png: bytes | None = field(default=None, repr=False)
    overlay_png: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StudyInput:
    """A study to log. ``identifier`` is only ever stored as a salted hash."""

    identifier: str | None = field(repr=False)  # kept out of repr so it cannot leak into logs
    body_part: str | None
    note: str
    model_name: str
    model_version: str
    model_sha256: str
    threshold: float
    threshold_version: str
    aggregate: str
    probability: float | None
    decision: str | None
    images: tuple[ImageInput, ...]


@dataclass(frozen=True)
class HistoryFilter:
    """History selection; ``None`` means "any". Dates are UTC calendar days, both inclusive."""

    date_from: date | None = None
    date_to: date | None = None
    body_part: str | None = None
    decision: str | None = None
    reviewed: bool | None = None
    model_version: str | None = None


# --------------------------------------------------------------------------- records (read side)


@dataclass(frozen=True)
class ImageRecord:
    id: int
    position: int
    file_name: str
    file_sha256: str
    probability: float | None
    error: str | None
    gate_status: str
    gate_reason: str
    share: float | None
    source_format: str | None
    width: int | None
    height: int | None
    thumbnail_png: bytes | None = field(repr=False)
    overlay_png: bytes | None = field(repr=False)


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    study_id: int
    created_at: datetime
    reviewer: str
    agree: bool
    true_label: str
    comment: str


@dataclass(frozen=True)
class StudyRecord:
    """A logged study with its images (by position) and reviews (oldest first)."""

    id: int
    created_at: datetime
    identifier_hash: str | None
    body_part: str | None
    note: str
    model_name: str
    model_version: str
    model_sha256: str
    threshold: float
    threshold_version: str
    aggregate: str
    probability: float | None
    decision: str | None
    n_images: int
    n_scored: int
    n_rejected: int
    n_warned: int
    images: tuple[ImageRecord, ...]
    reviews: tuple[ReviewRecord, ...]

    @property
    def latest_review(self) -> ReviewRecord | None:
        return self.reviews[-1] if self.reviews else None


# --------------------------------------------------------------------------- schema


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL gets ``timestamptz``. SQLite has no zone type, so it stores naive UTC text,
    which sorts and compares correctly; the zone is re-attached on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    pass


class Study(Base):
    """One uploaded set of radiographs and the model's decision for it.

    ``n_scored`` counts images that received a probability, ``n_rejected`` those that did not
    (unreadable, or refused by the input gate), ``n_warned`` those scored with a gate warning.
    """

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    identifier_hash: Mapped[str | None] = mapped_column(String(64))
    body_part: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(100))
    model_sha256: Mapped[str] = mapped_column(String(64))
    threshold: Mapped[float] = mapped_column(Float)
    threshold_version: Mapped[str] = mapped_column(String(100))
    aggregate: Mapped[str] = mapped_column(String(8))
    probability: Mapped[float | None] = mapped_column(Float)
    decision: Mapped[str | None] = mapped_column(String(16))
    n_images: Mapped[int] = mapped_column(Integer)
    n_scored: Mapped[int] = mapped_column(Integer)
    n_rejected: Mapped[int] = mapped_column(Integer)
    n_warned: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    images: Mapped[list[Image]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True, order_by="Image.position"
    )
    reviews: Mapped[list[Review]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True, order_by="Review.id"
    )

    __table_args__ = (
        CheckConstraint(_one_of("aggregate", AGGREGATES), name="ck_studies_aggregate"),
        CheckConstraint(f"decision IS NULL OR {_one_of('decision', DECISIONS)}", name="ck_studies_decision"),
        Index("ix_studies_created_at", "created_at"),
        Index("ix_studies_body_part_created_at", "body_part", "created_at"),
        Index("ix_studies_decision_created_at", "decision", "created_at"),
        Index("ix_studies_model_version", "model_version"),
    )


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(String(64))
    probability: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    gate_status: Mapped[str] = mapped_column(String(8), server_default=text("'ok'"))
    gate_reason: Mapped[str] = mapped_column(Text, server_default=text("''"))
    share: Mapped[float | None] = mapped_column(Float)
    source_format: Mapped[str | None] = mapped_column(String(32))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    thumbnail_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    overlay_png: Mapped[bytes | None] = mapped_column(LargeBinary)

    study: Mapped[Study] = relationship(back_populates="images")

    __table_args__ = (
        CheckConstraint(_one_of("gate_status", GATE_STATUSES), name="ck_images_gate_status"),
        UniqueConstraint("study_id", "position", name="uq_images_study_position"),
    )


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reviewer: Mapped[str] = mapped_column(String(200))
    agree: Mapped[bool] = mapped_column(Boolean)
    true_label: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")

    study: Mapped[Study] = relationship(back_populates="reviews")

    __table_args__ = (
        CheckConstraint(_one_of("true_label", LABELS), name="ck_reviews_true_label"),
        # (study_id, id) also serves "latest review per study" on PostgreSQL.
        Index("ix_reviews_study_id", "study_id", "id"),
    )


class SchemaVersion(Base):
    """One row per applied schema version; the current version is the maximum."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --------------------------------------------------------------------------- engine and migrations


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below): pysqlite's own handling would autocommit DDL,
        # making a half-applied migration possible.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front so they queue in busy_timeout; a deferred
        # transaction that reads first and upgrades later gets SQLITE_BUSY with no wait in WAL mode.
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _writer(engine: Engine) -> Engine:
    return engine.execution_options(**{_WRITE_OPTION: True})


def make_engine(url: str | None = None, *, busy_timeout_s: float = 30.0) -> Engine:
    """Open the prediction log at ``url`` (default: settings) and migrate it to SCHEMA_VERSION."""
    parsed = make_url(url or load_settings().database_url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        _configure_sqlite(engine, busy_timeout_s)
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
    migrate(engine)
    return engine


def _upgrade_1_to_2(conn: Connection) -> None:
    """Add the image quality gate. Literal DDL: a migration must not change when the models do."""
    conn.exec_driver_sql("ALTER TABLE studies ADD COLUMN n_warned INTEGER DEFAULT 0 NOT NULL")
    conn.exec_driver_sql(
        "ALTER TABLE images ADD COLUMN gate_status VARCHAR(8) DEFAULT 'ok' NOT NULL "
        f"CONSTRAINT ck_images_gate_status CHECK ({_one_of('gate_status', GATE_STATUSES)})"
    )
    conn.exec_driver_sql("ALTER TABLE images ADD COLUMN gate_reason TEXT DEFAULT '' NOT NULL")
    # v1 had no gate; an image that failed to score is the closest thing to a gate error.
    conn.exec_driver_sql("UPDATE images SET gate_status = 'error', gate_reason = error WHERE error IS NOT NULL")


# _UPGRADES[n] turns version n - 1 into version n.
_UPGRADES: dict[int, Callable[[Connection], None]] = {2: _upgrade_1_to_2}


def _read_version(conn: Connection) -> int | None:
    inspector = inspect(conn)
    if not inspector.has_table("schema_version"):
        if inspector.has_table("studies"):
            raise StoreError("The database has a studies table but no schema_version: it was not made by BoneSentinel.")
        return None
    return conn.scalar(select(func.max(SchemaVersion.version)))


def migrate(engine: Engine) -> int:
    """Create or upgrade the schema in place, in one transaction; returns the version found (0 if new)."""
    with engine.connect() as conn:
        found = _read_version(conn)
    if found == SCHEMA_VERSION:
        return found
    try:
        with _writer(engine).begin() as conn:
            # Re-read under the write lock: another process may have migrated in between.
            found = _read_version(conn)
            if found is not None and found > SCHEMA_VERSION:
                raise StoreError(
                    f"The database is at schema version {found}, newer than this BoneSentinel "
                    f"(version {SCHEMA_VERSION}); upgrade BoneSentinel instead of opening it with this one."
                )
            now = datetime.now(UTC)
            if found is None:
                Base.metadata.create_all(conn)
                conn.execute(SchemaVersion.__table__.insert().values(version=SCHEMA_VERSION, applied_at=now))
                return 0
            for version in range(found + 1, SCHEMA_VERSION + 1):
                _UPGRADES[version](conn)
                conn.execute(SchemaVersion.__table__.insert().values(version=version, applied_at=now))
            return found
    except SQLAlchemyError as exc:
        raise _store_error("upgrade the database schema", exc) from exc


# --------------------------------------------------------------------------- errors and retries


def _db_message(exc: SQLAlchemyError) -> str:
    # Only the driver's own first line: str(exc) would add SQL and bound parameters.
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc.__class__.__name__).strip()
    return message.splitlines()[0] if message else exc.__class__.__name__


def _is_transient(exc: SQLAlchemyError) -> bool:
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (plus extended codes)
    state = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if state is not None:
        return state in ("40001", "40P01")  # serialization failure, deadlock
    return "database is locked" in str(orig).lower()


def _store_error(action: str, exc: SQLAlchemyError) -> StoreError:
    if _is_transient(exc):
        return StoreError(
            f"The prediction log is busy (another process is writing to it), so BoneSentinel could not "
            f"{action}. Nothing was changed; please try again in a moment."
        )
    if isinstance(exc, IntegrityError):
        return StoreError(f"The database refused to {action} ({_db_message(exc)}). Nothing was changed.")
    return StoreError(f"Could not {action}: database error ({_db_message(exc)}). Nothing was changed.")


def _with_retries(action: str, work: Callable[[], T]) -> T:
    """Run a whole write transaction, retrying it while the database stays busy."""
    for delay in (*_RETRY_DELAYS_S, None):
        try:
            return work()
        except SQLAlchemyError as exc:
            if delay is None or not isinstance(exc, DBAPIError) or not _is_transient(exc):
                raise _store_error(action, exc) from exc
        # Jitter keeps writers that were blocked together from retrying in lockstep.
        time.sleep(delay * (0.5 + random.random()))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- privacy


def hash_identifier(identifier: str, salt: bytes) -> str:
    """HMAC-SHA256 (hex) of a patient/accession id; surrounding whitespace and Unicode form do not matter."""
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"the salt must be at least {MIN_SALT_BYTES} bytes")
    normalised = unicodedata.normalize("NFC", identifier.strip())
    return hmac.new(salt, normalised.encode("utf-8"), hashlib.sha256).hexdigest()


def load_salt(settings: Settings | None = None) -> bytes:
    """The identifier salt: BONESENTINEL_SALT, else ``settings.salt_path`` (created 0600 on first use)."""
    settings = settings or load_settings()
    if settings.salt_override:
        salt = settings.salt_override.encode("utf-8")
        if len(salt) < MIN_SALT_BYTES:
            raise StoreError(f"BONESENTINEL_SALT is too short; use at least {MIN_SALT_BYTES} random characters.")
        return salt
    path = settings.salt_path
    try:
        salt = path.read_bytes()
    except FileNotFoundError:
        salt = _create_salt(path)
    if len(salt) < MIN_SALT_BYTES:
        # Never regenerate silently: a new salt would unlink every identifier already stored.
        raise StoreError(f"The salt file {path} is damaged (only {len(salt)} bytes); restore it from a backup.")
    return salt


def _create_salt(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".salt-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
        os.close(fd)
        # link() fails if the file exists, so two first-time processes agree on one salt
        # and nobody ever reads a half-written file.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path.read_bytes()


# --------------------------------------------------------------------------- writes


def _check_probability(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise StoreError(f"{name} must be between 0 and 1, got {value!r}.")


def _validate(study: StudyInput) -> None:
    if study.aggregate not in AGGREGATES:
        raise StoreError(f"Unknown aggregate {study.aggregate!r}; expected one of {AGGREGATES}.")
    if study.decision is not None and study.decision not in DECISIONS:
        raise StoreError(f"Unknown decision {study.decision!r}; expected one of {DECISIONS} or none.")
    _check_probability("The threshold", study.threshold)
    _check_probability("The study probability", study.probability)
    for image in study.images:
        if image.gate_status not in GATE_STATUSES:
            raise StoreError(f"{image.file_name}: unknown gate status {image.gate_status!r}.")
        _check_probability(f"{image.file_name}: the probability", image.probability)


def save_study(
    engine: Engine,
    study: StudyInput,
    *,
    salt: bytes,
    store_images: bool = True,
    created_at: datetime | None = None,
) -> int:
    """Log a study and all its images in one transaction; returns the study id.

    ``created_at`` (timezone-aware) defaults to now; it exists for imports and tests.
    Raises :class:`StoreError`, having stored nothing, if the study cannot be saved.
    """
    _validate(study)
    identifier = (study.identifier or "").strip()
    if identifier and len(salt) < MIN_SALT_BYTES:
        # An unsalted (or weakly salted) hash of a short id is reversible by brute force.
        raise StoreError("No identifier salt is configured, so the study was not saved with its identifier.")
    identifier_hash = hash_identifier(identifier, salt) if identifier else None
    when = created_at or datetime.now(UTC)
    if when.tzinfo is None:
        raise StoreError("created_at must be timezone-aware.")

    def write() -> int:
        # Rebuilt per attempt: objects from a rolled-back session are not reusable.
        row = Study(
            created_at=when,
            identifier_hash=identifier_hash,
            body_part=study.body_part,
            note=study.note,
            model_name=study.model_name,
            model_version=study.model_version,
            model_sha256=study.model_sha256,
            threshold=study.threshold,
            threshold_version=study.threshold_version,
            aggregate=study.aggregate,
            probability=study.probability,
            decision=study.decision,
            n_images=len(study.images),
            n_scored=sum(image.probability is not None for image in study.images),
            n_rejected=sum(image.probability is None for image in study.images),
            n_warned=sum(image.gate_status == "warn" for image in study.images),
            images=[
                Image(
                    position=position,
                    file_name=image.file_name,
                    file_sha256=image.file_sha256,
                    probability=image.probability,
                    error=image.error,
                    gate_status=image.gate_status,
                    gate_reason=image.gate_reason,
                    share=image.share,
                    source_format=image.source_format,
                    width=image.width,
                    height=image.height,
                    thumbnail_png=image.thumbnail_png if store_images else None,
                    overlay_png=image.overlay_png if store_images else None,
                )
                for position, image in enumerate(study.images)
            ],
        )
        with Session(_writer(engine)) as session, session.begin():
            session.add(row)
            session.flush()
            return row.id

    return _with_retries("save the study", write)


def add_review(engine: Engine, study_id: int, *, reviewer: str, agree: bool, true_label: str, comment: str = "") -> int:
    """Record a clinician's review of a study; returns the review id. The latest review counts."""
    if true_label not in LABELS:
        raise StoreError(f"Unknown label {true_label!r}; expected one of {LABELS}.")
    reviewer = reviewer.strip()
    if not reviewer:
        raise StoreError("A review needs the reviewer's name.")

    def write() -> int:
        with Session(_writer(engine)) as session, session.begin():
            if session.scalar(select(Study.id).where(Study.id == study_id)) is None:
                raise StoreError(f"Study {study_id} does not exist; the review was not saved.")
            row = Review(
                study_id=study_id,
                created_at=datetime.now(UTC),
                reviewer=reviewer,
                agree=bool(agree),
                true_label=true_label,
                comment=comment,
            )
            session.add(row)
            session.flush()
            return row.id

    return _with_retries("save the review", write)


# --------------------------------------------------------------------------- reads


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _conditions(flt: HistoryFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if flt.date_from is not None:
        conditions.append(Study.created_at >= _day_start(flt.date_from))
    if flt.date_to is not None:
        conditions.append(Study.created_at < _day_start(flt.date_to) + timedelta(days=1))
    if flt.body_part is not None:
        conditions.append(Study.body_part == flt.body_part)
    if flt.decision is not None:
        conditions.append(Study.decision == flt.decision)
    if flt.model_version is not None:
        conditions.append(Study.model_version == flt.model_version)
    if flt.reviewed is not None:
        # Aliased and explicitly correlated: export and stats also join reviews in the outer query.
        other = aliased(Review)
        has_review = exists().where(other.study_id == Study.id).correlate(Study)
        conditions.append(has_review if flt.reviewed else ~has_review)
    return conditions


def _newest_first() -> tuple[Any, ...]:
    return (Study.created_at.desc(), Study.id.desc())


def query_history(engine: Engine, flt: HistoryFilter, page: int, page_size: int = 50) -> tuple[pd.DataFrame, int]:
    """One page (1-based, newest first) of matching studies and the total number that match."""
    import pandas as pd  # only History needs pandas; writer processes skip its import

    if page < 1 or page_size < 1:
        raise ValueError("page and page_size start at 1")
    conditions = _conditions(flt)
    reviewed = exists().where(Review.study_id == Study.id).correlate(Study)
    latest_agree = (
        select(Review.agree)
        .where(Review.study_id == Study.id)
        .order_by(Review.id.desc())
        .limit(1)
        .correlate(Study)
        .scalar_subquery()
    )
    stmt = (
        select(
            Study.id,
            Study.created_at,
            Study.body_part,
            Study.decision,
            Study.probability,
            Study.n_images,
            Study.n_rejected,
            Study.n_warned,
            Study.model_version,
            Study.threshold,
            reviewed.label("reviewed"),
            latest_agree.label("agree"),
        )
        .where(*conditions)
        .order_by(*_newest_first())
        .limit(page_size)
        .offset((page - 1) * page_size)
    )
    count = select(func.count()).select_from(Study).where(*conditions)
    with engine.connect() as conn:  # one read transaction: total and page see the same snapshot
        total = conn.scalar(count) or 0
        rows = conn.execute(stmt).all()
    records = [(*row[:-2], bool(row.reviewed), None if row.agree is None else bool(row.agree)) for row in rows]
    frame = pd.DataFrame.from_records(records, columns=list(HISTORY_COLUMNS))
    # Explicit dtypes so that an empty page has the same columns and types as a full one.
    frame = frame.astype(_HISTORY_DTYPES)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame, int(total)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    # A leading = + - @ makes spreadsheets run the cell as a formula (CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def iter_export_csv(engine: Engine, flt: HistoryFilter, *, chunk_rows: int = 1000) -> Iterator[bytes]:
    """Matching studies as UTF-8 CSV chunks (header first), fetched ``chunk_rows`` at a time."""
    latest = (
        select(Review.study_id, func.max(Review.id).label("review_id")).group_by(Review.study_id).subquery("latest")
    )
    stmt = (
        select(
            Study.id,
            Study.created_at,
            Study.body_part,
            Study.decision,
            Study.probability,
            Study.threshold,
            Study.threshold_version,
            Study.aggregate,
            Study.n_images,
            Study.n_scored,
            Study.n_rejected,
            Study.n_warned,
            Study.model_name,
            Study.model_version,
            Study.model_sha256,
            latest.c.review_id.is_not(None).label("reviewed"),
            Review.agree,
            Review.true_label,
            Study.note,
        )
        .outerjoin(latest, latest.c.study_id == Study.id)
        .outerjoin(Review, Review.id == latest.c.review_id)
        .where(*_conditions(flt))
        .order_by(*_newest_first())
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue().encode("utf-8")
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(stmt)
        for chunk in result.partitions():
            buffer.seek(0)
            buffer.truncate()
            for row in chunk:
                cells = [_csv_cell(value) for value in row]
                cells[15] = bool(cells[15])  # "reviewed": 0/1 on SQLite
                cells[16] = None if cells[16] is None else bool(cells[16])
                writer.writerow(cells)
            yield buffer.getvalue().encode("utf-8")


def export_csv(engine: Engine, flt: HistoryFilter) -> bytes:
    """All matching studies as one UTF-8 CSV document; no image blobs, no identifier hashes."""
    return b"".join(iter_export_csv(engine, flt))


def _copy(record_type: type[T], row: Any, **extra: Any) -> T:
    names = [f.name for f in fields(record_type) if f.name not in extra]  # type: ignore[arg-type]
    return record_type(**{name: getattr(row, name) for name in names}, **extra)


def get_study(engine: Engine, study_id: int) -> StudyRecord | None:
    """The study with its images and reviews as plain frozen records, or None if absent."""
    stmt = select(Study).where(Study.id == study_id).options(selectinload(Study.images), selectinload(Study.reviews))
    with Session(engine) as session:
        row = session.scalars(stmt).one_or_none()
        if row is None:
            return None
        return _copy(
            StudyRecord,
            row,
            images=tuple(_copy(ImageRecord, image) for image in row.images),
            reviews=tuple(_copy(ReviewRecord, review) for review in row.reviews),
        )


def agreement_stats(engine: Engine, flt: HistoryFilter) -> dict[str, Any]:
    """How often reviewers agreed with the model, using only each study's latest review."""
    latest = select(func.max(Review.id).label("review_id")).group_by(Review.study_id).subquery("latest")
    stmt = (
        select(func.count(Review.id), func.coalesce(func.sum(case((Review.agree, 1), else_=0)), 0))
        .select_from(Review)
        .join(latest, Review.id == latest.c.review_id)
        .join(Study, Study.id == Review.study_id)
        .where(*_conditions(flt))
    )
    with engine.connect() as conn:
        reviewed, agreed = conn.execute(stmt).one()
    reviewed, agreed = int(reviewed), int(agreed)
    return {"reviewed": reviewed, "agree": agreed, "agreement_rate": agreed / reviewed if reviewed else None}


def distinct_values(engine: Engine) -> dict[str, list[str]]:
    """Body parts and model versions present in the log, sorted, for filter widgets."""
    with engine.connect() as conn:
        body_parts = conn.scalars(
            select(Study.body_part).where(Study.body_part.is_not(None)).distinct().order_by(Study.body_part)
        ).all()
        versions = conn.scalars(select(Study.model_version).distinct().order_by(Study.model_version)).all()
    return {"body_parts": list(body_parts), "model_versions": list(versions)}
