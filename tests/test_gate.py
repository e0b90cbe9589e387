"""The input gate: pixel rules, the fitted gate in a bundle, and what the CLI reports."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.bundle import load_bundle, read_card
from core.decode import decode_bytes
from core.errors import BundleError
from core.gate import (
    GATE_FILE,
    GATE_SIDE,
    OK,
    REJECT,
    WARN,
    FittedGate,
    body_part_warning,
    build_gate_network,
    gate_thumbnail,
    pixel_signals,
    pixel_verdict,
)
from tests.conftest import png_bytes, synthetic_radiograph


def verdict_of(data: bytes):
    image = decode_bytes(data, "x.png")
    return pixel_verdict(pixel_signals(image.pixels, image.meta.colourfulness))


def test_radiograph_like_image_passes_pixel_rules():
    assert verdict_of(png_bytes(synthetic_radiograph(200, 160))).status == OK


def test_real_knee_radiographs_pass_pixel_rules(knee_files):
    for path in knee_files:
        assert verdict_of(path.read_bytes()).status == OK, path.name


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (
            np.dstack(
                [np.full((64, 64), 200, np.uint8), np.full((64, 64), 30, np.uint8), np.full((64, 64), 60, np.uint8)]
            )
            + np.random.default_rng(0).integers(0, 40, (64, 64, 3)).astype(np.uint8),
            "colour image",
        ),
        (np.full((64, 64), 128, np.uint8), "blank"),
        (np.random.default_rng(1).integers(0, 256, (128, 128), dtype=np.uint8), "noise"),
    ],
)
def test_non_radiographs_are_rejected(image, reason):
    verdict = verdict_of(png_bytes(image))
    assert verdict.status == REJECT and reason in verdict.reason


def test_text_page_is_rejected():
    page = Image.new("L", (400, 500), 250)
    draw = ImageDraw.Draw(page)
    for y in range(20, 480, 16):
        draw.text((20, y), "Take one tablet twice daily with food and water.", fill=10)
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    verdict = verdict_of(buffer.getvalue())
    assert verdict.status == REJECT and "document" in verdict.reason


def _gate(ok_above=0.5, reject_below=0.5, warn_novelty=2.0) -> FittedGate:
    import keras

    keras.utils.set_random_seed(0)
    d = 4
    weights = tuple(build_gate_network().get_weights())
    return FittedGate(weights, ok_above, reject_below, np.zeros(d), np.eye(d), np.ones(d), warn_novelty)


def test_fitted_gate_tiers_and_declared_radiographs():
    gate = _gate(ok_above=0.6, reject_below=0.3)
    assert gate.verdict(0.9, 0.5, {}).status == OK
    assert gate.verdict(0.9, 3.0, {}).status == WARN
    assert gate.verdict(0.45, 0.5, {}).status == WARN
    assert gate.verdict(0.1, 0.5, {}).status == REJECT
    assert gate.verdict(0.1, 0.5, {}, declared_radiograph=True).status == WARN
    np.testing.assert_allclose(gate.novelty(np.array([[2.0, 0, 0, 0]])), [1.0])


def test_gate_round_trips_through_npz(tmp_path):
    gate = _gate()
    gate.save(tmp_path / GATE_FILE)
    loaded = FittedGate.load(tmp_path / GATE_FILE)
    assert (loaded.ok_above_, loaded.reject_below_, loaded.warn_novelty_) == (0.5, 0.5, 2.0)
    thumbnails = np.random.default_rng(0).random((3, GATE_SIDE, GATE_SIDE)).astype(np.float32)
    scores = loaded.radiograph_score(thumbnails)
    np.testing.assert_allclose(scores, gate.radiograph_score(thumbnails), rtol=1e-5)
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))


def test_gate_thumbnail_keeps_the_whole_image_centred():
    wide = np.ones((50, 200), np.float32)
    thumb = gate_thumbnail(wide)
    assert thumb.shape == (GATE_SIDE, GATE_SIDE) and thumb.dtype == np.float32
    rows = np.flatnonzero(thumb.max(axis=1) > 0.5)
    assert thumb[:, 0].max() == 1.0 and rows.min() > 0 and rows.max() < GATE_SIDE - 1  # letterboxed, not cropped
    assert abs((rows.min() + rows.max()) / 2 - (GATE_SIDE - 1) / 2) <= 1
    tiny = gate_thumbnail(np.full((5, 5), 0.5, np.float32))
    assert tiny.max() == pytest.approx(0.5)


def test_body_part_warning():
    assert body_part_warning("CHEST", "KNEE") and "CHEST" in body_part_warning("CHEST", "KNEE")
    assert body_part_warning("knee", "KNEE") is None and body_part_warning(None, "KNEE") is None


@pytest.fixture(scope="module")
def gated_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with a gate fitted by training.gate on a synthetic class-folder set."""
    from training.gate import main as gate_main

    root = tmp_path_factory.mktemp("gate-folders")
    patient = 9200000
    for split in ("train", "val"):
        for grade in ("0", "3"):
            folder = root / split / grade
            folder.mkdir(parents=True)
            for _ in range(8):
                (folder / f"{patient}L.png").write_bytes(png_bytes(synthetic_radiograph(96, 96, seed=patient)))
                patient += 1
    bundle = tmp_path_factory.mktemp("gated") / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert (
        gate_main(
            ["--bundle", str(bundle), "--dataset", "folders", "--data-dir", str(root), "--train-limit", "16"]
            + ["--epochs", "1", "--samples", "32", "--folds", "2"]
        )
        == 0
    )
    return bundle


def test_fitted_gate_is_in_the_card_and_measured(gated_bundle):
    card = read_card(gated_bundle)
    gate = card["gate"]
    assert (gated_bundle / GATE_FILE).is_file() and len(gate["sha256"]) == 64
    measured = gate["measured"]
    assert measured["val_n"] == 16 and 0 <= measured["val_ok_rate"] <= 1
    assert measured["non_radiograph_n"] > 20 and 0 <= measured["non_radiograph_reject_rate"] <= 1
    assert measured["non_radiograph_missed_n"] == round(
        (1 - measured["non_radiograph_reject_rate"]) * measured["non_radiograph_n"]
    )
    assert gate["network"]["epochs"] == 1 and "2-fold" in measured["non_radiograph_reject_rate_method"]
    assert card["training_data"]["body_part"] == "KNEE"
    assert load_bundle(gated_bundle).gate is not None


def test_altered_gate_is_refused(gated_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(gated_bundle, copy)
    with open(copy / GATE_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="gate"):
        load_bundle(copy)


def test_cli_reports_gate_per_image(gated_bundle, tmp_path):
    from core.predict import run

    photo = tmp_path / "holiday.png"
    rgb = np.dstack([np.linspace(0, 255, 128 * 128).reshape(128, 128).astype(np.uint8)] * 3)
    rgb[..., 0] = 250
    photo.write_bytes(png_bytes(rgb))
    good = tmp_path / "knee.png"
    good.write_bytes(png_bytes(synthetic_radiograph(96, 96, seed=9200001)))
    document, status = run(["--bundle", str(gated_bundle), str(photo), str(good)])
    json.dumps(document)
    by_file = {img["file"]: img for img in document["images"]}
    assert by_file["holiday.png"]["gate"]["status"] == "reject" and by_file["holiday.png"]["probability"] is None
    assert "colour" in by_file["holiday.png"]["gate"]["reason"]
    assert by_file["knee.png"]["gate"]["status"] in ("ok", "warn") and by_file["knee.png"]["probability"] is not None
    assert status == 3 and document["study"]["scored"] == 1 and document["study"]["rejected"] == 1
