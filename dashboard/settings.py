"""Dashboard settings, read once from the environment.

Kept free of Streamlit so that the store, scripts and tests can share it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Settings:
    """Where the dashboard keeps its data and what it is allowed to accept."""

    data_dir: Path
    database_url: str
    store_images: bool
    salt_path: Path
    bundle_dir: Path | None
    # A literal salt from BONESENTINEL_SALT; kept out of repr so it never lands in a log.
    salt_override: str | None = field(default=None, repr=False)
    max_files_per_study: int = 50
    max_file_mb: int = 50


def _parse_bool(name: str, raw: str | None, default: bool) -> bool:
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    # Refuse rather than guess: a misspelt "off" must not silently keep storing images.
    raise ValueError(f"{name}={raw!r} is not a boolean; use one of {sorted(_TRUE | _FALSE)}")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    raw_dir = env.get("BONESENTINEL_DATA_DIR", "").strip()
    data_dir = Path(raw_dir).expanduser() if raw_dir else PROJECT_ROOT / "var"
    database_url = env.get("BONESENTINEL_DATABASE_URL", "").strip() or f"sqlite:///{data_dir}/bonesentinel.sqlite3"
    raw_bundle = env.get("BONESENTINEL_BUNDLE", "").strip()
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        store_images=_parse_bool("BONESENTINEL_STORE_IMAGES", env.get("BONESENTINEL_STORE_IMAGES"), True),
        salt_path=data_dir / "salt.key",
        bundle_dir=Path(raw_bundle).expanduser() if raw_bundle else None,
        salt_override=env.get("BONESENTINEL_SALT") or None,
    )
