"""History page and CSV export on a large prediction log (SQLite, 100,000 studies by default).

1. Fill a SQLite database (a temporary one, or ``--db PATH``) with ``--studies`` logged
   studies: created_at spread over the past year, a realistic mix of body parts, decisions,
   aggregates and four model versions that follow each other in time; 1–4 image rows per
   study (without thumbnail/overlay blobs, which the History queries never read); about 20 %
   of studies reviewed, a few of them twice. Rows go in with SQLAlchemy Core ``insert()``
   executemany on the store's own tables, in batches inside one transaction per table.
   The schema comes from ``dashboard.store.make_engine``, so its indexes are the real ones.
   With ``--db`` an existing log is only topped up to ``--studies``, so reruns are quick.
2. Time ``dashboard.store.query_history`` (one page of 50 + the total count, as the History
   page asks) for several filters, and ``export_csv`` for a filtered selection and for all
   rows. Queries are interleaved (order rotates each run); medians over ``--runs`` runs after
   ``--warmup``. The target for one page is <= 100 ms; this script only reports.

The last line printed is one JSON object with every figure.

    .venv/bin/python benchmarks/history.py [--studies 100000] [--runs 20] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

DEFAULT_STUDIES = 100_000
DEFAULT_RUNS = 20
DEFAULT_WARMUP = 2
INSERT_BATCH_ROWS = 5_000
PAGE_SIZE = 50
DEEP_PAGE = 1000
PAGE_TARGET_MS = 100.0
DAYS_OF_LOG = 365
RECENT_DAYS = 30
REVIEWED_SHARE = 0.20
SECOND_REVIEW_SHARE = 0.10  # of reviewed studies
AGREE_SHARE = 0.85
NO_SCORE_SHARE = 0.01  # studies in which no image could be scored
REJECTED_IMAGE_SHARE = 0.04
WARNED_IMAGE_SHARE = 0.06
NOTE_SHARE = 0.10
IDENTIFIER_SHARE = 0.70
MAX_AGGREGATE_SHARE = 0.10
MODEL_NAME = "bonesentinel-knee-oa"
# (version, threshold, share of the year it was in service), in order of deployment.
MODEL_VERSIONS = (("0.9.0", 0.50, 0.20), ("1.0.0", 0.42, 0.40), ("1.0.1", 0.44, 0.30), ("1.1.0", 0.41, 0.10))
BODY_PART_WEIGHTS = {
    "KNEE": 0.34,
    "HAND": 0.10,
    "WRIST": 0.10,
    "ANKLE": 0.08,
    "SHOULDER": 0.08,
    "ELBOW": 0.06,
    "FOOT": 0.06,
    "HIP": 0.06,
    "FOREARM": 0.03,
    "FINGER": 0.03,
    "HUMERUS": 0.02,
    "OTHER": 0.02,
    None: 0.02,
}
IMAGES_PER_STUDY_WEIGHTS = (0.35, 0.35, 0.20, 0.10)  # 1, 2, 3, 4 images
REVIEWERS = ("dr.ahmed", "dr.baker", "dr.chen", "dr.dubois", "dr.evans", "dr.fischer")
FILTERED_BODY_PART = "KNEE"
FILTERED_VERSION = "1.0.1"


# --------------------------------------------------------------------------- filling


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--studies", type=int, default=DEFAULT_STUDIES, help=f"studies in the log (default {DEFAULT_STUDIES})"
    )
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per query (default {DEFAULT_RUNS})")
    p.add_argument("--export-runs", type=int, default=None, help="timed runs per export (default: --runs)")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help=f"untimed runs first (default {DEFAULT_WARMUP})")
    p.add_argument("--db", help="SQLite file to use and keep (default: a temporary one, deleted afterwards)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--analyze", action="store_true", help="run SQLite ANALYZE before timing (the app never does; for comparison)"
    )
    args = p.parse_args(argv)
    if args.studies < 1 or args.runs < 1 or args.warmup < 0 or (args.export_runs is not None and args.export_runs < 1):
        p.error("--studies, --runs and --export-runs must be >= 1, --warmup >= 0")
    return args


def _model_version_index(fraction_of_year: np.ndarray) -> np.ndarray:
    """Which model was in service at each point of the year (0 = oldest)."""
    bounds = np.cumsum([share for _, _, share in MODEL_VERSIONS])[:-1]
    return np.searchsorted(bounds, fraction_of_year, side="right")


def generate_rows(
    n: int, *, first_id: int, now: datetime, rng: np.random.Generator
) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows for the studies, images and reviews tables; study ids grow with created_at."""
    seconds = np.sort(rng.uniform(0, DAYS_OF_LOG * 86400, n))
    start = now - timedelta(days=DAYS_OF_LOG)
    created = [start + timedelta(seconds=float(s)) for s in seconds]
    versions = _model_version_index(seconds / (DAYS_OF_LOG * 86400))
    parts = list(BODY_PART_WEIGHTS)
    weights = np.array(list(BODY_PART_WEIGHTS.values()))
    body_parts = rng.choice(len(parts), size=n, p=weights / weights.sum())
    n_images = rng.choice(len(IMAGES_PER_STUDY_WEIGHTS), size=n, p=IMAGES_PER_STUDY_WEIGHTS) + 1
    unscored = rng.random(n) < NO_SCORE_SHARE
    probabilities = rng.beta(1.2, 1.6, n)
    aggregates = np.where(rng.random(n) < MAX_AGGREGATE_SHARE, "max", "mean")
    has_note = rng.random(n) < NOTE_SHARE
    has_identifier = rng.random(n) < IDENTIFIER_SHARE
    version_hashes = [rng.bytes(32).hex() for _ in MODEL_VERSIONS]

    studies, images = [], []
    for k in range(n):
        study_id = first_id + k
        version, threshold, _ = MODEL_VERSIONS[versions[k]]
        count = int(n_images[k])
        statuses = rng.random(count)
        image_rows = []
        for position in range(count):
            refused = bool(unscored[k]) or statuses[position] < REJECTED_IMAGE_SHARE
            warned = not refused and statuses[position] < REJECTED_IMAGE_SHARE + WARNED_IMAGE_SHARE
            image_rows.append(
                {
                    "study_id": study_id,
                    "position": position,
                    "file_name": f"IMG{study_id:07d}_{position}.png",
                    "file_sha256": rng.bytes(32).hex(),
                    "probability": None if refused else float(np.clip(probabilities[k] + rng.normal(0, 0.05), 0, 1)),
                    "error": "not a PNG, JPEG or DICOM image" if refused else None,
                    "gate_status": "error" if refused else ("warn" if warned else "ok"),
                    "gate_reason": "unreadable" if refused else ("low contrast" if warned else ""),
                    "share": None,
                    "source_format": None if refused else "PNG",
                    "width": None if refused else 1024,
                    "height": None if refused else 1280,
                    "thumbnail_png": None,
                    "overlay_png": None,
                }
            )
        n_scored = sum(row["probability"] is not None for row in image_rows)
        probability = None if n_scored == 0 else float(probabilities[k])
        images.extend(image_rows)
        studies.append(
            {
                "id": study_id,
                "created_at": created[k],
                "identifier_hash": rng.bytes(32).hex() if has_identifier[k] else None,
                "body_part": parts[body_parts[k]],
                "note": "follow-up, compare with previous" if has_note[k] else "",
                "model_name": MODEL_NAME,
                "model_version": version,
                "model_sha256": version_hashes[versions[k]],
                "threshold": threshold,
                "threshold_version": version,
                "aggregate": str(aggregates[k]),
                "probability": probability,
                "decision": None if probability is None else ("abnormal" if probability >= threshold else "normal"),
                "n_images": count,
                "n_scored": n_scored,
                "n_rejected": count - n_scored,
                "n_warned": sum(row["gate_status"] == "warn" for row in image_rows),
            }
        )
    return studies, images, generate_reviews(studies, now=now, rng=rng)


def generate_reviews(studies: list[dict], *, now: datetime, rng: np.random.Generator) -> list[dict]:
    reviewed = rng.random(len(studies)) < REVIEWED_SHARE
    reviews = []
    for study, is_reviewed in zip(studies, reviewed, strict=True):
        if not is_reviewed:
            continue
        when = study["created_at"]
        for _ in range(2 if rng.random() < SECOND_REVIEW_SHARE else 1):
            when = min(now, when + timedelta(hours=float(rng.uniform(1, 24 * 7))))
            agree = bool(rng.random() < AGREE_SHARE)
            decision = study["decision"] or str(rng.choice(["normal", "abnormal"]))
            label = decision if agree else ("normal" if decision == "abnormal" else "abnormal")
            reviews.append(
                {
                    "study_id": study["id"],
                    "created_at": when,
                    "reviewer": str(rng.choice(REVIEWERS)),
                    "agree": agree,
                    "true_label": label,
                    "comment": "",
                }
            )
    return reviews


def insert_rows(engine, table, rows: list[dict], batch: int = INSERT_BATCH_ROWS) -> None:
    """executemany in batches, all inside one transaction."""
    from sqlalchemy import insert

    statement = insert(table)
    with engine.begin() as conn:
        for start in range(0, len(rows), batch):
            conn.execute(statement, rows[start : start + batch])


def fill(engine, studies: int, *, now: datetime, seed: int) -> tuple[int, float]:
    """Top the log up to ``studies`` studies; returns (studies added, seconds taken)."""
    from sqlalchemy import func, select

    from dashboard.store import Image, Review, Study

    with engine.connect() as conn:
        present = conn.scalar(select(func.count()).select_from(Study)) or 0
        last_id = conn.scalar(select(func.max(Study.id))) or 0
    missing = studies - present
    if missing <= 0:
        return 0, 0.0
    started = time.perf_counter()
    rows, images, reviews = generate_rows(missing, first_id=last_id + 1, now=now, rng=np.random.default_rng(seed))
    for table, table_rows in ((Study.__table__, rows), (Image.__table__, images), (Review.__table__, reviews)):
        insert_rows(engine, table, table_rows)
    sqlite_command(engine, "PRAGMA wal_checkpoint(TRUNCATE)")
    return missing, time.perf_counter() - started


def sqlite_command(engine, sql: str) -> None:
    """Run a statement outside any transaction (the store's connections are in autocommit mode)."""
    raw = engine.raw_connection()
    try:
        raw.driver_connection.execute(sql)
    finally:
        raw.close()


# --------------------------------------------------------------------------- timing


def page_queries(today: date) -> dict[str, tuple[object, int]]:
    """name → (HistoryFilter, page) for the History page's typical requests."""
    from dashboard.store import HistoryFilter

    recent = today - timedelta(days=RECENT_DAYS)
    return {
        "no filter, page 1": (HistoryFilter(), 1),
        f"no filter, page {DEEP_PAGE}": (HistoryFilter(), DEEP_PAGE),
        f"last {RECENT_DAYS} days + {FILTERED_BODY_PART}": (
            HistoryFilter(date_from=recent, date_to=today, body_part=FILTERED_BODY_PART),
            1,
        ),
        "abnormal + reviewed": (HistoryFilter(decision="abnormal", reviewed=True), 1),
        "not reviewed (review queue)": (HistoryFilter(reviewed=False), 1),
        f"model version {FILTERED_VERSION}": (HistoryFilter(model_version=FILTERED_VERSION), 1),
    }


def export_queries(today: date) -> dict[str, object]:
    from dashboard.store import HistoryFilter

    recent = today - timedelta(days=RECENT_DAYS)
    return {
        f"export last {RECENT_DAYS} days + {FILTERED_BODY_PART}": HistoryFilter(
            date_from=recent, date_to=today, body_part=FILTERED_BODY_PART
        ),
        "export everything": HistoryFilter(),
    }


def time_interleaved(calls: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call; the calling order rotates every run."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dashboard.store import export_csv, make_engine, query_history

    with tempfile.TemporaryDirectory(prefix="bonesentinel-history-") as workdir:
        path = Path(args.db) if args.db else Path(workdir) / "history.sqlite3"
        engine = make_engine(f"sqlite:///{path}")
        now = datetime.now(UTC)
        added, fill_s = fill(engine, args.studies, now=now, seed=args.seed)
        if args.analyze:
            sqlite_command(engine, "ANALYZE")
        today = now.date()

        pages = page_queries(today)
        page_calls = {
            name: (lambda f=flt, p=page: query_history(engine, f, p, PAGE_SIZE)) for name, (flt, page) in pages.items()
        }
        matches = {name: call()[1] for name, call in page_calls.items()}
        page_ms = time_interleaved(page_calls, args.runs, args.warmup)

        exports = export_queries(today)
        export_calls = {name: (lambda f=flt: export_csv(engine, f)) for name, flt in exports.items()}
        export_rows = {name: call().count(b"\n") - 1 for name, call in export_calls.items()}
        export_ms = time_interleaved(export_calls, args.export_runs or args.runs, min(args.warmup, 1))

        with engine.connect() as conn:
            total = conn.exec_driver_sql("SELECT count(*) FROM studies").scalar()
            reviewed = conn.exec_driver_sql("SELECT count(DISTINCT study_id) FROM reviews").scalar()
            n_images = conn.exec_driver_sql("SELECT count(*) FROM images").scalar()
        engine.dispose()
        db_mb = path.stat().st_size / 2**20

    page_median = {name: statistics.median(v) for name, v in page_ms.items()}
    export_median = {name: statistics.median(v) for name, v in export_ms.items()}
    result = {
        "rows": total,
        "reviewed": reviewed,
        "images": n_images,
        "inserted": added,
        "insert_s": round(fill_s, 2),
        "db_mb": round(db_mb, 1),
        "page_size": PAGE_SIZE,
        "page_ms_median": {k: round(v, 2) for k, v in page_median.items()},
        "page_ms_max": {k: round(max(v), 2) for k, v in page_ms.items()},
        "worst_page_ms": round(max(page_median.values()), 2),
        "page_target_ms": PAGE_TARGET_MS,
        "pages_within_target": all(v <= PAGE_TARGET_MS for v in page_median.values()),
        "matches": matches,
        "export_ms": {k: round(v, 1) for k, v in export_median.items()},
        "export_rows": export_rows,
        "analyzed": args.analyze,
        "runs": args.runs,
        "export_runs": args.export_runs or args.runs,
    }
    print_report(result, args.db)
    print(json.dumps(result))
    return 0


def print_report(result: dict, db: str | None) -> None:
    where = db or "a temporary file (deleted)"
    inserted = (
        f"{result['inserted']:,} studies inserted in {result['insert_s']:.1f} s" if result["inserted"] else "reused"
    )
    print(f"Log       {result['rows']:,} studies, {result['images']:,} images, {result['reviewed']:,} reviewed")
    print(f"Database  {where}, {result['db_mb']:.0f} MB; {inserted}")
    print(f"Runs      {result['runs']} per query, {result['export_runs']} per export, interleaved\n")
    print(
        f"{'query_history (page of ' + str(result['page_size']) + ' + count)':<40} {'matches':>8} {'median ms':>10} {'max ms':>8}"
    )
    for name, ms in result["page_ms_median"].items():
        flag = "" if ms <= result["page_target_ms"] else "  over target"
        print(f"{name:<40} {result['matches'][name]:>8,} {ms:>10.1f} {result['page_ms_max'][name]:>8.1f}{flag}")
    print(f"\nWorst page median {result['worst_page_ms']:.1f} ms (target <= {result['page_target_ms']:.0f} ms)\n")
    print(f"{'export_csv':<40} {'rows':>8} {'median ms':>10}")
    for name, ms in result["export_ms"].items():
        print(f"{name:<40} {result['export_rows'][name]:>8,} {ms:>10.1f}")
    print()


if __name__ == "__main__":
    raise SystemExit(main())
