"""Model bundles: save/load round trip, integrity checks, incompatibility refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.bundle import CARD_FILE, MODEL_FILE, load_bundle, read_card, write_card
from core.errors import BundleError
from core.inference import Predictor
from core.model import FEATURE_LAYER
from core.preprocess import preprocess
from tests.conftest import TINY_INPUT, synthetic_radiograph


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_bundle, target)
    return target


def test_model_is_flat_and_reaches_top_activation(tiny_predictor):
    model = tiny_predictor.bundle_.model
    assert model.get_layer(FEATURE_LAYER) is not None
    assert not any(type(layer).__name__ == "Lambda" for layer in model.layers)


def test_predictions_identical_after_save_and_load(tiny_predictor, tiny_bundle):
    x = np.stack([preprocess(synthetic_radiograph(seed=s) / 255.0, TINY_INPUT) for s in range(3)])
    direct = tiny_predictor.bundle_.model(x, training=False).numpy()[:, 0]
    reloaded = Predictor.from_bundle_dir(tiny_bundle, warm=False).predict_proba(x)[:, 1]
    np.testing.assert_allclose(direct, reloaded, rtol=1e-5, atol=1e-6)


def test_tampered_weights_are_refused(bundle_copy):
    with open(bundle_copy / MODEL_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="altered or corrupted"):
        load_bundle(bundle_copy)


def test_edited_card_is_refused(bundle_copy):
    card = json.loads((bundle_copy / CARD_FILE).read_text())
    card["threshold"] = 0.01
    (bundle_copy / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match="card digest"):
        read_card(bundle_copy)


def test_rewritten_card_with_other_preprocessing_is_refused(bundle_copy):
    card = read_card(bundle_copy)
    card["preprocessing_id"] = "divide-by-255-v0"
    write_card(bundle_copy, card)
    with pytest.raises(BundleError, match="preprocessing"):
        read_card(bundle_copy)


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="No model bundle"):
        load_bundle(tmp_path / "nothing")


def test_card_has_required_fields(tiny_bundle):
    card = read_card(tiny_bundle)
    assert card["input_size"] == TINY_INPUT and len(card["sha256"]) == 64
