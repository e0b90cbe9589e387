"""Model bundle: a directory holding ``model.keras`` and ``card.json``.

The card records what the model is, what it was trained on, how well it did on validation
data and which threshold it decides at. Loading verifies the weights' SHA-256 and the
card's own digest, and refuses a card that disagrees with this code's preprocessing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import BundleError
from core.model import ARCHITECTURE
from core.preprocess import PREPROCESSING_ID

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
CARD_SCHEMA = 1
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "bundled" / "knee-oa"
REQUIRED_CARD_KEYS = (
    "schema",
    "name",
    "version",
    "created_at",
    "architecture",
    "input_size",
    "preprocessing_id",
    "threshold",
    "threshold_method",
    "training_data",
    "intended_use",
    "limitations",
    "sha256",
)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_digest(card: dict[str, Any]) -> str:
    """SHA-256 of the card's canonical JSON, without the digest field itself."""
    body = {k: v for k, v in card.items() if k != "card_digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle. ``card`` is a deep copy: mutate it only through :func:`write_card`."""

    path: Path
    card: dict[str, Any]
    model: Any  # keras.Model
    gate: Any = None  # core.gate.FittedGate when the bundle has a fitted gate

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def version(self) -> str:
        return self.card["version"]

    @property
    def sha256(self) -> str:
        return self.card["sha256"]

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    @property
    def input_size(self) -> int:
        return int(self.card["input_size"])

    @property
    def calibration(self) -> tuple[float, float]:
        """(slope, intercept) applied to the logit: Platt scaling, or 1/T for a temperature."""
        cal = self.card.get("calibration") or {}
        if "slope" in cal:
            return float(cal["slope"]), float(cal["intercept"])
        return 1.0 / float(cal.get("temperature", 1.0)), 0.0


def new_card(
    *,
    name: str,
    version: str,
    input_size: int,
    training_data: dict[str, Any],
    intended_use: str,
    limitations: list[str],
    threshold: float = 0.5,
    threshold_method: str = "default 0.5 (not yet evaluated)",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A card with every required field; ``sha256`` is filled in by :func:`save_bundle`."""
    card = {
        "schema": CARD_SCHEMA,
        "name": name,
        "version": version,
        "created_at": utc_now(),
        "architecture": ARCHITECTURE,
        "input_size": int(input_size),
        "preprocessing_id": PREPROCESSING_ID,
        "threshold": float(threshold),
        "threshold_method": threshold_method,
        "training_data": training_data,
        "intended_use": intended_use,
        "limitations": limitations,
        "validation": None,
        "sha256": "",
    }
    card.update(extra or {})
    return card


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_card(bundle_dir: str | Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``card`` with the current weights hash and a fresh digest; returns what was written."""
    bundle_dir = Path(bundle_dir)
    card = copy.deepcopy(card)
    card["sha256"] = sha256_file(bundle_dir / MODEL_FILE)
    card["card_digest"] = card_digest(card)
    _atomic_write(bundle_dir / CARD_FILE, (json.dumps(card, indent=2, sort_keys=False) + "\n").encode())
    return card


def save_bundle(model, card: dict[str, Any], bundle_dir: str | Path) -> dict[str, Any]:
    """Save weights without optimizer state (a fresh uncompiled copy) and the card."""
    from core.model import build_model

    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    dropout = float(model.get_layer("head_dropout").rate)
    clean = build_model(int(card["input_size"]), weights=None, dropout=dropout)
    clean.set_weights(model.get_weights())
    tmp = bundle_dir / f".tmp-{MODEL_FILE}"
    clean.save(tmp)
    os.replace(tmp, bundle_dir / MODEL_FILE)
    return write_card(bundle_dir, card)


def read_card(bundle_dir: str | Path) -> dict[str, Any]:
    """Read and check a card without loading the model (cheap; used by the Model page)."""
    bundle_dir = Path(bundle_dir)
    card_path = bundle_dir / CARD_FILE
    if not bundle_dir.is_dir():
        raise BundleError(f"No model bundle at {bundle_dir}.")
    if not card_path.is_file():
        raise BundleError(f"Model bundle {bundle_dir} has no {CARD_FILE}.")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{card_path} is not valid JSON ({err}).") from None
    missing = [key for key in REQUIRED_CARD_KEYS if key not in card]
    if missing:
        raise BundleError(f"{card_path} lacks required fields: {', '.join(missing)}.")
    if "card_digest" in card and card["card_digest"] != card_digest(card):
        raise BundleError(f"{card_path} was altered after it was written (card digest mismatch); refusing it.")
    if card["preprocessing_id"] != PREPROCESSING_ID:
        raise BundleError(
            f"{bundle_dir} expects preprocessing '{card['preprocessing_id']}', this code provides '{PREPROCESSING_ID}'."
        )
    if card["architecture"] != ARCHITECTURE:
        raise BundleError(f"{bundle_dir} is a {card['architecture']} model; this code serves {ARCHITECTURE}.")
    return card


def load_bundle(bundle_dir: str | Path | None = None) -> Bundle:
    """Verify and load a bundle (the bundled default when ``bundle_dir`` is None)."""
    bundle_dir = Path(bundle_dir) if bundle_dir else DEFAULT_BUNDLE_DIR
    if bundle_dir == DEFAULT_BUNDLE_DIR and not (bundle_dir / CARD_FILE).is_file():
        raise BundleError(f"No default model is bundled with this installation (looked in {bundle_dir}).")
    card = read_card(bundle_dir)
    model_path = bundle_dir / MODEL_FILE
    if not model_path.is_file():
        raise BundleError(f"Model bundle {bundle_dir} has no {MODEL_FILE}.")
    actual = sha256_file(model_path)
    if actual != card["sha256"]:
        raise BundleError(
            f"{model_path} does not match its card (SHA-256 {actual[:12]}… ≠ {str(card['sha256'])[:12]}…); "
            "the weights were altered or corrupted, refusing to load them."
        )
    import keras

    try:
        # safe_mode refuses to deserialize lambdas: a bundle can never run code on load.
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as err:
        raise BundleError(f"{model_path} could not be loaded as a Keras model ({err}).") from None
    size = tuple(model.input_shape[1:3])
    if size != (card["input_size"], card["input_size"]):
        raise BundleError(f"{bundle_dir}: card says input {card['input_size']}, the model takes {size}.")
    return Bundle(path=bundle_dir, card=card, model=model, gate=_load_gate(bundle_dir, card))


def _load_gate(bundle_dir: Path, card: dict[str, Any]):
    from core.gate import GATE_FILE, FittedGate

    gate = card.get("gate")
    if not gate:
        return None
    path = bundle_dir / GATE_FILE
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: the card describes an input gate but {GATE_FILE} is missing.")
    if sha256_file(path) != gate.get("sha256"):
        raise BundleError(f"{path} does not match its card (SHA-256 mismatch); refusing the altered gate.")
    try:
        return FittedGate.load(path)
    except (OSError, ValueError, KeyError) as err:
        raise BundleError(f"{path} could not be read ({err}).") from None
