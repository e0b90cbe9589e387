"""Training pipeline and CLIs: a smoke run yields a bundle that core.predict serves; evaluation is honest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.bundle import load_bundle, read_card
from core.decode import decode_file
from core.inference import Predictor
from core.preprocess import preprocess
from data.records import Record
from tests.conftest import png_bytes, synthetic_radiograph
from training.train import class_weights, split_records

SMOKE_INPUT = 32


def make_knee_like_tree(root, per_class: int = 12) -> None:
    """root/{train,val}/{0,3}/<7 digits><side>.png; abnormal images get an extra bright blob."""
    patient = 9100000
    for split in ("train", "val"):
        for grade in ("0", "3"):
            folder = root / split / grade
            folder.mkdir(parents=True)
            for k in range(per_class):
                image = synthetic_radiograph(64, 64, seed=patient)
                if grade == "3":
                    image[20:40, 20:40] = 250
                (folder / f"{patient}{'LR'[k % 2]}.png").write_bytes(png_bytes(image))
                patient += 1


@pytest.fixture(scope="module")
def smoke_bundle(tmp_path_factory):
    from training.train import main as train_main

    root = tmp_path_factory.mktemp("knee-like")
    make_knee_like_tree(root)
    out = tmp_path_factory.mktemp("runs") / "smoke"
    argv = [
        "--dataset",
        "folders",
        "--data-dir",
        str(root),
        "--out",
        str(out),
        "--input-size",
        str(SMOKE_INPUT),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--verbose",
        "0",
    ]
    assert train_main(argv) == 0
    return root, out


def test_smoke_training_writes_a_loadable_bundle(smoke_bundle):
    root, out = smoke_bundle
    card = read_card(out)
    assert card["input_size"] == SMOKE_INPUT and card["training"]["epochs_run"] == 1
    assert card["training_data"]["counts"]["train_images"] == 24
    assert (out / "train_log.csv").read_text().startswith("epoch")
    from core.predict import run

    files = sorted(str(p) for p in (root / "val" / "3").glob("*.png"))[:2]
    document, status = run(["--bundle", str(out), *files])
    assert status == 0 and document["model"]["sha256"] == card["sha256"]
    assert all(0 <= img["probability"] <= 1 for img in document["images"])


def test_evaluation_card_matches_scikit_learn(smoke_bundle):
    from training.evaluate import main as evaluate_main

    root, out = smoke_bundle
    assert (
        evaluate_main(["--bundle", str(out), "--dataset", "folders", "--data-dir", str(root), "--n-boot", "100"]) == 0
    )
    card = read_card(out)  # digest and hash re-verified on read
    load_bundle(out)
    paths = sorted((root / "val").rglob("*.png"))
    labels = np.array([int(p.parent.name in ("2", "3", "4")) for p in paths])
    predictor = Predictor(load_bundle(out), warm=False)
    x = np.stack([preprocess(decode_file(p).pixels, SMOKE_INPUT) for p in paths])
    probs = predictor.predict_proba(x)[:, 1]
    level = card["validation"]["image_level"]
    assert level["n"] == len(paths) == 24
    assert level["auroc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-9)
    lo, hi = level["auroc_ci"]
    assert lo <= level["auroc"] <= hi
    at = level["at_threshold"]
    assert at["tp"] + at["fn"] == labels.sum() and at["tn"] + at["fp"] == len(labels) - labels.sum()
    assert at["sensitivity"] == pytest.approx(at["tp"] / labels.sum())
    assert card["calibration"]["method"] == "Platt scaling" and np.isfinite(card["calibration"]["slope"])
    json.dumps(card)  # the whole card is plain JSON


def test_class_weights_balance_the_classes():
    rows = [Record("p", 1, "s", "p", "KNEE", "train")] * 1 + [Record("p", 0, "s", "p", "KNEE", "train")] * 3
    weights = class_weights(rows)
    assert weights[1] == pytest.approx(2.0) and weights[0] == pytest.approx(4 / 6)
    assert weights[1] * 1 == pytest.approx(weights[0] * 3)


def test_split_limit_keeps_both_classes():
    rows = [Record(f"{i}", int(i >= 50), f"{i}", f"{i}", "KNEE", "train") for i in range(100)]
    subset = split_records(rows, "train", 10)
    assert len(subset) == 10 and sum(r.label for r in subset) == 5


def test_eval_pipeline_equals_inference_preprocessing(tmp_path):
    from training.pipeline import make_dataset

    paths = []
    for seed in range(3):
        path = tmp_path / f"{seed}.png"
        path.write_bytes(png_bytes(synthetic_radiograph(70, 50, seed=seed)))
        paths.append(path)
    records = [Record(str(p), 0, p.stem, p.stem, "KNEE", "val") for p in paths]
    x, y = next(iter(make_dataset(records, 48, 8, training=False)))
    expected = np.stack([preprocess(decode_file(p).pixels, 48) for p in paths])
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-4)
    assert y.numpy().tolist() == [0.0, 0.0, 0.0]


def test_training_batches_are_augmented_but_in_range(tmp_path):
    from training.pipeline import Augmentation, make_dataset

    records = []
    for seed in range(8):
        path = tmp_path / f"{seed}.png"
        path.write_bytes(png_bytes(synthetic_radiograph(64, 64, seed=seed)))
        records.append(Record(str(path), seed % 2, str(seed), str(seed), "KNEE", "train"))
    plain, _ = next(iter(make_dataset(records, 32, 8, training=False)))
    augmented, labels = next(iter(make_dataset(records, 32, 8, training=True, augmentation=Augmentation(), seed=3)))
    assert augmented.shape == (8, 32, 32, 3)
    assert float(augmented.numpy().min()) >= 0.0 and float(augmented.numpy().max()) <= 255.0
    assert not np.allclose(np.sort(augmented.numpy().ravel()), np.sort(plain.numpy().ravel()))
    assert sorted(labels.numpy().tolist()) == [0.0] * 4 + [1.0] * 4


def test_init_weights_carry_over_to_a_larger_input(smoke_bundle, tmp_path):
    """Progressive resizing: a bundle trained at 32 px initialises training at 48 px."""
    import keras

    from training.train import load_initial_weights

    _, out = smoke_bundle
    from core.model import build_model

    model = build_model(48)
    load_initial_weights(model, str(out))
    source = keras.saving.load_model(out / "model.keras", compile=False)
    for a, b in zip(model.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
