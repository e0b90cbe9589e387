"""Shared fixtures: tiny random-weight bundles, real data locations, synthetic images."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
KNEE = SHARED / "knee-kl"
TINY_INPUT = 64


def require_knee() -> Path:
    if not KNEE.is_dir():
        pytest.skip(
            f"real knee radiographs not present at {KNEE} (../shared/datasets is beside the project in CI only)"
        )
    return KNEE


def pydicom_data_dir() -> Path:
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.origin:
        pytest.skip("pydicom-data is not installed (pip install -r requirements-dev.txt)")
    return Path(spec.origin).parent / "data"


@pytest.fixture(scope="session")
def knee_dir() -> Path:
    return require_knee()


@pytest.fixture(scope="session")
def knee_files(knee_dir) -> list[Path]:
    """A few real validation radiographs, both classes."""
    return sorted((knee_dir / "val" / "0").glob("*.png"))[:2] + sorted((knee_dir / "val" / "3").glob("*.png"))[:2]


@pytest.fixture(scope="session")
def dicom_dir() -> Path:
    return pydicom_data_dir()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A random-weight bundle at a small input size (fast to build and score)."""
    import keras

    from core.bundle import new_card, save_bundle
    from core.model import build_model

    keras.utils.set_random_seed(1)
    model = build_model(TINY_INPUT, weights=None)
    card = new_card(
        name="tiny-test",
        version="0.0.1",
        input_size=TINY_INPUT,
        training_data={"name": "none (random weights)", "credit": "n/a", "licence": "n/a"},
        intended_use="tests only",
        limitations=["random weights"],
        threshold=0.5,
    )
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(model, card, path)
    return path


@pytest.fixture(scope="session")
def tiny_predictor(tiny_bundle):
    from core.inference import Predictor

    return Predictor.from_bundle_dir(tiny_bundle)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_radiograph(height: int = 96, width: int = 80, seed: int = 0) -> np.ndarray:
    """A gray, bone-like uint8 image: bright bar on dark background with noise."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 8, (height, width))
    image[:, width // 3 : 2 * width // 3] += 140
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def evaluated_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle, evaluated on a small synthetic class-folder set so the card has metrics."""
    from training.evaluate import main as evaluate_main

    root = tmp_path_factory.mktemp("folders")
    for grade, label_seed in (("0", 0), ("3", 100)):
        folder = root / "val" / grade
        folder.mkdir(parents=True)
        for k in range(6):
            (folder / f"{9000000 + label_seed + k:07d}L.png").write_bytes(
                png_bytes(synthetic_radiograph(seed=label_seed + k))
            )
    bundle = tmp_path_factory.mktemp("evaluated") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert (
        evaluate_main(["--bundle", str(bundle), "--dataset", "folders", "--data-dir", str(root), "--n-boot", "50"]) == 0
    )
    return bundle
