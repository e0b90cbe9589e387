"""Grad-CAM: class-activation maps from ``top_activation`` on the logit, and overlays.

The gradient step itself lives in :mod:`core.inference`, compiled together with the forward
pass; this module holds the small, pure steps around it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.preprocess import Box

DEFAULT_ALPHA = 0.45
OVERLAY_MAX_SIDE = 1024
# Anchor colours of a perceptually ordered blue→red map (cold = transparent in the overlay).
_COLOUR_STOPS = np.array(
    [
        [48, 18, 59],
        [65, 105, 225],
        [26, 190, 200],
        [120, 230, 90],
        [250, 200, 40],
        [240, 100, 20],
        [180, 4, 38],
    ],
    dtype=np.float32,
)


def weights_from_gradients(grads: np.ndarray) -> np.ndarray:
    """Channel weights: gradients averaged over space. (B, h, w, C) → (B, C)."""
    return grads.mean(axis=(1, 2))


def normalise_map(cam: np.ndarray) -> np.ndarray:
    """ReLU then scale to [0, 1]; an all-zero map stays zero instead of becoming NaN."""
    cam = np.maximum(np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    peak = float(cam.max()) if cam.size else 0.0
    return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, dtype=np.float32)


def map_to_image(cam: np.ndarray, box: Box, canvas_size: int, height: int, width: int) -> np.ndarray:
    """Resize a feature-map CAM to the canvas, crop the letterbox, resize to (height, width)."""
    cam_image = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F")
    canvas = cam_image.resize((canvas_size, canvas_size), Image.Resampling.BILINEAR)
    cropped = canvas.crop((box.left, box.top, box.left + box.width, box.top + box.height))
    full = cropped.resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(full, dtype=np.float32), 0.0, 1.0)


def colourise(heat: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] → (H, W, 3) uint8 through the colour stops."""
    positions = np.clip(heat, 0.0, 1.0) * (len(_COLOUR_STOPS) - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, len(_COLOUR_STOPS) - 1)
    frac = (positions - low)[..., None]
    return (_COLOUR_STOPS[low] * (1 - frac) + _COLOUR_STOPS[high] * frac).astype(np.uint8)


def display_size(height: int, width: int, max_side: int = OVERLAY_MAX_SIDE) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def overlay(pixels: np.ndarray, heat: np.ndarray, alpha: float = DEFAULT_ALPHA) -> Image.Image:
    """Blend the heat map over the grayscale image; cold regions leave the radiograph visible."""
    gray = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)[..., None] * 255.0
    weight = (float(alpha) * np.clip(heat, 0.0, 1.0))[..., None]
    blended = gray * (1.0 - weight) + colourise(heat).astype(np.float32) * weight
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), mode="RGB")


def overlay_for(
    pixels: np.ndarray, cam: np.ndarray, box: Box, canvas_size: int, alpha: float = DEFAULT_ALPHA
) -> Image.Image:
    """Overlay of a feature-map CAM on the decoded image, at a display resolution."""
    height, width = display_size(*pixels.shape)
    base = pixels
    if (height, width) != pixels.shape:
        base = np.asarray(
            Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F").resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
    return overlay(base, map_to_image(cam, box, canvas_size, height, width), alpha)


def grayscale_image(pixels: np.ndarray, max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
    """The decoded image as an 8-bit picture at display resolution (thumbnails, side-by-side views)."""
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L")
    height, width = display_size(*pixels.shape, max_side=max_side)
    return image.resize((width, height), Image.Resampling.BILINEAR) if (height, width) != pixels.shape else image
