"""Batch scoring, Grad-CAM maps and overlays."""

from __future__ import annotations

import numpy as np

from core.gradcam import map_to_image, normalise_map, overlay, overlay_for
from core.inference import bucket_size
from core.preprocess import letterbox_box, preprocess
from tests.conftest import TINY_INPUT, png_bytes, synthetic_radiograph


def test_batch_equals_single_scores(tiny_predictor):
    x = np.stack([preprocess(synthetic_radiograph(seed=s) / 255.0, TINY_INPUT) for s in range(5)])
    batch = tiny_predictor.predict_proba(x)[:, 1]
    singles = np.array([tiny_predictor.predict_proba(x[i : i + 1])[0, 1] for i in range(5)])
    np.testing.assert_allclose(batch, singles, rtol=1e-4, atol=1e-6)
    assert np.all((batch > 0) & (batch < 1))


def test_explain_matches_score_and_maps_are_normalised(tiny_predictor):
    x = np.stack([preprocess(synthetic_radiograph(seed=s) / 255.0, TINY_INPUT) for s in range(3)])
    probs, embeddings, cams = tiny_predictor.explain(x)
    np.testing.assert_allclose(probs, tiny_predictor.predict_proba(x)[:, 1], rtol=1e-4)
    assert cams.shape[0] == 3 and embeddings.shape == (3, 1280)
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1 + 1e-6


def test_score_files_keeps_order_and_reports_bad_files(tiny_predictor):
    files = [
        ("a.png", png_bytes(synthetic_radiograph(seed=1))),
        ("broken.png", b"not an image"),
        ("b.png", png_bytes(synthetic_radiograph(seed=2))),
    ]
    scores = tiny_predictor.score_files(files)
    assert [s.name for s in scores] == ["a.png", "broken.png", "b.png"]
    assert scores[1].probability is None and "not a PNG" in scores[1].error
    assert scores[0].scored and scores[2].scored and scores[0].cam is not None


def test_zero_map_stays_zero():
    assert not np.isnan(normalise_map(np.zeros((7, 7)))).any()
    assert normalise_map(np.zeros((7, 7))).max() == 0
    np.testing.assert_allclose(normalise_map(np.array([[-1.0, 2.0], [1.0, 0.0]])), [[0, 1], [0.5, 0]])


def test_cam_maps_back_to_original_size():
    box = letterbox_box(120, 60, TINY_INPUT)
    cam = np.zeros((4, 4), np.float32)
    cam[:, 2:] = 1.0
    heat = map_to_image(cam, box, TINY_INPUT, 120, 60)
    assert heat.shape == (120, 60)
    assert heat[:, -5:].mean() > heat[:, :5].mean()


def test_overlay_is_rgb_and_keeps_cold_regions_gray():
    pixels = np.full((10, 10), 0.5, np.float32)
    heat = np.zeros((10, 10), np.float32)
    heat[0, 0] = 1.0
    image = np.asarray(overlay(pixels, heat))
    assert image.shape == (10, 10, 3)
    assert tuple(image[5, 5]) == (127, 127, 127)
    assert tuple(image[0, 0]) != (127, 127, 127)


def test_overlay_for_real_size(tiny_predictor):
    score = tiny_predictor.score_files([("x.png", png_bytes(synthetic_radiograph(90, 70)))])[0]
    image = overlay_for(score.image.pixels, score.cam, score.box, TINY_INPUT)
    assert image.size == (70, 90)


def test_buckets():
    assert [bucket_size(n) for n in (1, 2, 3, 5, 17, 32)] == [1, 2, 4, 8, 32, 32]
