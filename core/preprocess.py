"""The one preprocessing path shared by training, inference and Grad-CAM.

Aspect-preserving resize, centred zero padding to a square, 3 channels, float 0–255:
Keras' EfficientNet rescales inside the model, so pixels are never divided by 255 here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PREPROCESSING_ID = "gray-letterbox-0-255-v1"
CHANNELS = 3
PIXEL_SCALE = 255.0


@dataclass(frozen=True)
class Box:
    """Where the resized image sits on the square canvas: (top, left, height, width)."""

    top: int
    left: int
    height: int
    width: int


def letterbox_box(height: int, width: int, size: int) -> Box:
    """Placement of an (height, width) image scaled to fit a size×size canvas."""
    scale = size / max(height, width)
    new_h = max(1, round(height * scale))
    new_w = max(1, round(width * scale))
    return Box(top=(size - new_h) // 2, left=(size - new_w) // 2, height=new_h, width=new_w)


def letterbox(pixels: np.ndarray, size: int) -> tuple[np.ndarray, Box]:
    """Resize a (H, W) image in [0, 1] to fit ``size``×``size``; returns (H', W') 0–255 and the box."""
    box = letterbox_box(*pixels.shape, size)
    image = Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F")
    if (box.height, box.width) != pixels.shape:
        image = image.resize((box.width, box.height), Image.Resampling.BILINEAR)
    canvas = np.zeros((size, size), dtype=np.float32)
    canvas[box.top : box.top + box.height, box.left : box.left + box.width] = np.asarray(image)
    return np.clip(canvas, 0.0, 1.0) * PIXEL_SCALE, box


def to_model_input(gray: np.ndarray) -> np.ndarray:
    """(H, W) 0–255 → (H, W, 3) float32, the layout EfficientNet expects."""
    return np.repeat(np.asarray(gray, dtype=np.float32)[..., None], CHANNELS, axis=-1)


def preprocess(pixels: np.ndarray, size: int) -> np.ndarray:
    """Decoded pixels in [0, 1] → model input (size, size, 3), float 0–255."""
    canvas, _ = letterbox(pixels, size)
    return to_model_input(canvas)
