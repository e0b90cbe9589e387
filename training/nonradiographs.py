"""A set of images that are not radiographs, built only from what packages ship.

Sources: scikit-image's sample photographs (colour, and the same in grayscale), its scanned
text pages, pages and screenshots rendered here with Pillow, and blank, gradient and noise
images. Each item carries its source so that fit/report splits never share a source.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOUR_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "cat",
    "retina",
    "colorwheel",
    "logo",
)
GRAY_PHOTOS = (
    "camera",
    "coins",
    "moon",
    "clock",
    "brick",
    "grass",
    "gravel",
    "cell",
    "microaneurysms",
    "page",
    "text",
    "horse",
    "checkerboard",
    "binary_blobs",
    "shepp_logan_phantom",
)
LOREM = [
    "Patient",
    "information",
    "leaflet.",
    "Take",
    "one",
    "tablet",
    "twice",
    "daily",
    "with",
    "food.",
    "Do",
    "not",
    "exceed",
    "the",
    "stated",
    "dose.",
    "If",
    "symptoms",
    "persist,",
    "consult",
    "your",
    "doctor.",
    "Keep",
    "out",
    "of",
    "reach",
    "of",
    "children.",
    "Store",
    "below",
    "25",
    "degrees.",
]


@dataclass(frozen=True)
class Item:
    source: str
    kind: str  # colour-photo, gray-photo, page, screenshot, blank, noise
    png: bytes


def _png(array_or_image) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        lo, hi = float(array.min()), float(array.max())
        return ((array - lo) / (hi - lo or 1) * 255).astype(np.uint8)
    return array


def _variants(source: str, kind: str, image: Image.Image) -> Iterator[Item]:
    """The image, a centre crop, and a half-size copy."""
    yield Item(source, kind, _png(image))
    w, h = image.size
    yield Item(source, kind, _png(image.crop((w // 6, h // 6, w - w // 6, h - h // 6))))
    yield Item(source, kind, _png(image.resize((max(8, w // 2), max(8, h // 2)))))


def package_photos() -> Iterator[Item]:
    from skimage import data

    for name in COLOUR_PHOTOS:
        image = Image.fromarray(_as_uint8(getattr(data, name)()))
        yield from _variants(name, "colour-photo", image.convert("RGB"))
        yield from _variants(f"{name}-gray", "gray-photo", image.convert("L"))
    for name in GRAY_PHOTOS:
        yield from _variants(name, "gray-photo", Image.fromarray(_as_uint8(getattr(data, name)())).convert("L"))


def rendered_pages(count: int = 6, seed: int = 0) -> Iterator[Item]:
    rng = np.random.default_rng(seed)
    for k in range(count):
        dark = k % 3 == 2
        page = Image.new("L", (620, 820), 30 if dark else 250)
        draw = ImageDraw.Draw(page)
        y = 40
        while y < 780:
            words = " ".join(rng.choice(LOREM, size=int(rng.integers(6, 12))))
            draw.text((40, y), words, fill=220 if dark else 20)
            y += int(rng.integers(14, 22))
        yield Item(f"page-{k}", "page", _png(page))


def rendered_screenshots(count: int = 6, seed: int = 1) -> Iterator[Item]:
    rng = np.random.default_rng(seed)
    for k in range(count):
        colour = k % 2 == 0
        shot = Image.new("RGB", (1024, 640), (236, 239, 244))
        draw = ImageDraw.Draw(shot)
        bar = (40, 90, 170) if colour else (60, 60, 60)
        draw.rectangle((0, 0, 1024, 36), fill=bar)
        draw.rectangle((0, 36, 200, 640), fill=(250, 250, 250))
        for i in range(8):
            draw.text((16, 60 + 28 * i), f"Menu item {i}", fill=(30, 30, 30))
        for _ in range(int(rng.integers(3, 7))):
            x, y = int(rng.integers(220, 800)), int(rng.integers(60, 520))
            fill = tuple(int(v) for v in rng.integers(0, 255, 3)) if colour else (200, 200, 200)
            draw.rectangle((x, y, x + 180, y + 80), fill=fill, outline=(90, 90, 90))
            draw.text((x + 10, y + 10), "Button", fill=(0, 0, 0))
        yield Item(f"screenshot-{k}", "screenshot", _png(shot))


def blanks_and_noise(seed: int = 2) -> Iterator[Item]:
    rng = np.random.default_rng(seed)
    for value in (0, 128, 255):
        yield Item(f"blank-{value}", "blank", _png(np.full((256, 256), value, np.uint8)))
    yield Item("gradient", "blank", _png(np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))))
    for k in range(3):
        yield Item(f"noise-uniform-{k}", "noise", _png(rng.integers(0, 256, (256, 256), dtype=np.uint8)))
        gauss = np.clip(rng.normal(128, 40, (256, 256)), 0, 255).astype(np.uint8)
        yield Item(f"noise-gauss-{k}", "noise", _png(gauss))
        yield Item(f"noise-colour-{k}", "noise", _png(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)))


def non_radiographs() -> list[Item]:
    """The whole set, in a fixed order."""
    return [*package_photos(), *rendered_pages(), *rendered_screenshots(), *blanks_and_noise()]


def split_by_source(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Alternate sources between a fit half and a report half (variants stay together)."""
    sources = sorted({item.source for item in items})
    fit_sources = set(sources[::2])
    return [i for i in items if i.source in fit_sources], [i for i in items if i.source not in fit_sources]
