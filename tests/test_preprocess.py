"""The shared preprocessing keeps aspect, pads, and feeds 0–255 floats."""

import numpy as np

from core.preprocess import letterbox, letterbox_box, preprocess


def test_aspect_is_kept_and_padded():
    pixels = np.ones((100, 50), np.float32)
    canvas, box = letterbox(pixels, 64)
    assert canvas.shape == (64, 64)
    assert (box.height, box.width) == (64, 32)
    assert box.left == 16 and box.top == 0
    assert canvas[:, box.left : box.left + box.width].min() == 255.0
    assert canvas[:, : box.left].max() == 0.0 and canvas[:, box.left + box.width :].max() == 0.0


def test_model_input_is_three_channel_0_255():
    x = preprocess(np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32), 32)
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    assert x.max() == 255.0 and x.min() == 0.0  # never divided by 255
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_box_for_wide_image():
    box = letterbox_box(30, 90, 90)
    assert (box.top, box.left, box.height, box.width) == (30, 0, 30, 90)
