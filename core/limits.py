"""Study-level limits, checked before anything is decoded.

Per-file limits (bytes, declared pixels) are enforced by :mod:`core.decode` for each file, so
an oversized file is refused on its own and the rest of the study is still scored. This module
adds the limits that only make sense for a whole study: how many files, how many bytes in all,
and how many pixels in all (every decoded image of a study is held in memory at once).

Typical use, before scoring::

    enforce_study(files, limits)  # raises StudyRejected naming every limit the study breaks
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.decode import MAX_FILE_BYTES, MAX_PIXELS, declared_size
from core.errors import BoneSentinelError

HEAD_BYTES = 1 << 20  # enough for any header we read (JPEG APP segments come before the size)


@dataclass(frozen=True)
class Limits:
    """What one study may contain. ``max_study_pixels`` bounds memory (float32: 4 bytes/pixel)."""

    max_files: int = 50
    max_file_bytes: int = MAX_FILE_BYTES
    max_study_bytes: int = 500 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    max_study_pixels: int = 400_000_000

    def __post_init__(self) -> None:
        for name in ("max_files", "max_file_bytes", "max_study_bytes", "max_pixels", "max_study_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS = Limits()


class StudyRejected(BoneSentinelError):
    """A study refused as a whole; ``reasons`` lists every limit it broke."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("The study was not scored: " + "; ".join(self.reasons) + ".")


@dataclass(frozen=True)
class _Entry:
    size: int | None  # bytes; None when the file cannot be read (the decoder reports it)
    head: bytes


def _entry(item: tuple[str, bytes] | str | os.PathLike[str]) -> _Entry:
    if isinstance(item, tuple):
        data = item[1]
        return _Entry(len(data), bytes(data[:HEAD_BYTES]))
    path = Path(item)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return _Entry(None, b"")
    return _Entry(size, head)


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def check_study(
    files: Iterable[tuple[str, bytes] | str | os.PathLike[str]], limits: Limits = DEFAULT_LIMITS
) -> list[str]:
    """Every study-level limit the files break, as one-line reasons; empty when the study is fine.

    ``files`` is what :meth:`core.inference.Predictor.score_files` takes: (name, bytes) pairs
    or paths. Only sizes and headers are read. Files the decoder will refuse on their own
    (unreadable, above ``max_file_bytes`` or ``max_pixels``) do not count towards the totals.
    """
    items = list(files)
    reasons: list[str] = []
    if len(items) > limits.max_files:
        reasons.append(f"the study has {len(items)} files, above the limit of {limits.max_files} per study")
        return reasons  # do not even stat thousands of files
    total_bytes = total_pixels = 0
    for item in items:
        entry = _entry(item)
        if entry.size is None or entry.size > limits.max_file_bytes:
            continue
        total_bytes += entry.size
        size = declared_size(entry.head)
        if size is not None:
            pixels = max(size[0], 0) * max(size[1], 0)
            if pixels <= limits.max_pixels:
                total_pixels += pixels
    if total_bytes > limits.max_study_bytes:
        reasons.append(f"the study is {_mb(total_bytes)} in all, above the {_mb(limits.max_study_bytes)} limit")
    if total_pixels > limits.max_study_pixels:
        reasons.append(
            f"the study's images hold {total_pixels:,} pixels in all, above the "
            f"{limits.max_study_pixels:,} pixel limit; score it in smaller parts"
        )
    return reasons


def enforce_study(files: Iterable[tuple[str, bytes] | str | os.PathLike[str]], limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise :class:`StudyRejected` if :func:`check_study` finds anything."""
    reasons = check_study(files, limits)
    if reasons:
        raise StudyRejected(reasons)
