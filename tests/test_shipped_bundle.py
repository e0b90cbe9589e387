"""The bundled default model: it loads, its hashes verify, and it reproduces its card on real data."""

from __future__ import annotations

import numpy as np
import pytest

from core.bundle import DEFAULT_BUNDLE_DIR, load_bundle, read_card

pytestmark = pytest.mark.skipif(
    not (DEFAULT_BUNDLE_DIR / "card.json").is_file(), reason=f"no bundled model at {DEFAULT_BUNDLE_DIR}"
)
MAX_BUNDLE_BYTES = 20 * 1024 * 1024


def test_card_is_complete_and_honest():
    card = read_card(DEFAULT_BUNDLE_DIR)
    data = card["training_data"]
    assert "Knee Osteoarthritis Severity Grading Dataset" in data["name"]
    assert "10.17632/56rmx5bjcr.1" in data["credit"] and data["licence"] == "CC BY 4.0"
    assert "not a medical device" in card["intended_use"].lower()
    assert any("from scratch" in item.lower() for item in card["limitations"])
    assert card["validation"]["image_level"]["n"] == 826
    assert "python -m training.train" in card["training"]["command"]
    size = sum(p.stat().st_size for p in DEFAULT_BUNDLE_DIR.iterdir())
    assert size <= MAX_BUNDLE_BYTES


def test_loads_with_verified_hashes():
    bundle = load_bundle()
    assert bundle.card["sha256"] and bundle.gate is not None


@pytest.mark.slow
def test_reproduces_validation_auroc_on_real_images(knee_dir):
    """Scores all 826 real validation radiographs and recomputes the card's figures."""
    from core.inference import Predictor
    from core.metrics import auroc, threshold_metrics
    from data.folders import load_folders
    from training.pipeline import stack_inputs

    predictor = Predictor.from_bundle_dir(warm=False)
    records = [r for r in load_folders(knee_dir)[0] if r.split == "val"]
    labels = np.array([r.label for r in records])
    probs = np.concatenate(
        [
            predictor.predict_proba(stack_inputs(records[i : i + 64], predictor.input_size_))[:, 1]
            for i in range(0, len(records), 64)
        ]
    )
    level = predictor.card["validation"]["image_level"]
    assert auroc(labels, probs) == pytest.approx(level["auroc"], abs=1e-4)
    at = threshold_metrics(labels, probs, predictor.threshold_)
    assert at["sensitivity"] == pytest.approx(level["at_threshold"]["sensitivity"], abs=0.01)
    assert at["specificity"] == pytest.approx(level["at_threshold"]["specificity"], abs=0.01)


def test_cli_scores_a_real_knee_with_the_default_model(knee_files):
    from core.predict import run

    document, status = run([str(knee_files[0]), str(knee_files[-1])])
    assert status == 0
    assert document["model"]["name"] == read_card(DEFAULT_BUNDLE_DIR)["name"]
    assert all(img["gate"]["status"] in ("ok", "warn") for img in document["images"])


@pytest.fixture(scope="module")
def shipped_predictor():
    from core.inference import Predictor

    return Predictor.from_bundle_dir(warm=False)


def _statuses(predictor, files):
    from training.gate import statuses

    return statuses(predictor, files)


def test_shipped_gate_rejects_the_package_non_radiographs(shipped_predictor):
    """In-sample for the shipped gate (the card's held-out figure is cross-validated by source)."""
    from training.nonradiographs import non_radiographs

    items = non_radiographs()
    got = _statuses(shipped_predictor, [(f"{i.source}.png", i.png) for i in items])
    missed = [i.source for i, s in zip(items, got, strict=True) if s != "reject"]
    assert len(missed) <= 0.01 * len(items), missed
    grays = [i for i in items if i.kind == "gray-photo"]
    assert _statuses(shipped_predictor, [(f"{i.source}.png", i.png) for i in grays]).count("reject") >= 0.99 * len(
        grays
    )


def test_shipped_gate_warns_other_anatomy_dicoms(shipped_predictor, dicom_dir):
    from training.gate import other_anatomy_files

    files = other_anatomy_files()
    assert files, "pydicom-data holds the chest and tibia radiographs"
    assert set(_statuses(shipped_predictor, files)) == {"warn"}


@pytest.mark.slow
def test_shipped_gate_reproduces_its_validation_ok_rate(shipped_predictor, knee_dir):
    """All 826 real validation radiographs through the real path: the card's ok share, exactly."""
    paths = sorted((knee_dir / "val").glob("*/*.png"))
    got = _statuses(shipped_predictor, [(p.name, p.read_bytes()) for p in paths])
    measured = read_card(DEFAULT_BUNDLE_DIR)["gate"]["measured"]
    assert len(paths) == measured["val_n"]
    assert got.count("ok") / len(got) == pytest.approx(measured["val_ok_rate"], abs=1.5 / len(got))
    assert got.count("ok") / len(got) >= 0.99
