"""A set of images that are not radiographs, built only from what packages ship.

Sources: scikit-image's and scikit-learn's sample photographs (colour, and the same in
grayscale), scikit-image's scanned text pages and faces, pages and screenshots rendered here
with Pillow, blank, gradient and noise images, and, when their wheels have been downloaded
(``pip download --no-deps scipy==1.9.3 matplotlib mahotas -d DIR``), the sample photographs
and images those wheels ship. Each item carries its source and a group (a photograph and its
grayscale copy share one) so that fit/report splits never share a source.

The gate network is also trained on endless procedural negatives (dead-leaves images, 1/f
noise, text pages, shaded shapes, spots and winding lines): image models of natural scenes,
documents, graphics and micrographs, never a real photograph.
"""

from __future__ import annotations

import bz2
import io
import pickle
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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

    @property
    def group(self) -> str:
        """The source without its grayscale suffix or generated index: what must not leak across a split."""
        base = self.source.removesuffix("-gray")
        if self.kind in ("page", "screenshot", "blank", "noise"):
            return self.kind
        return base


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


def more_package_photos() -> Iterator[Item]:
    """scikit-learn's two sample photographs, scikit-image's stereo photograph and a few faces."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    named = dict(zip(("china", "flower"), load_sample_images().images, strict=True))
    named["motorcycle"] = data.stereo_motorcycle()[0]
    for name, array in named.items():
        image = Image.fromarray(_as_uint8(array))
        yield from _variants(name, "colour-photo", image.convert("RGB"))
        yield from _variants(f"{name}-gray", "gray-photo", image.convert("L"))
    faces = data.lfw_subset()
    for k in range(0, len(faces), len(faces) // LFW_FACES):
        face = Image.fromarray(_as_uint8(faces[k])).resize((100, 100), Image.Resampling.BICUBIC)
        yield Item("lfw-faces", "gray-photo", _png(face))


LFW_FACES = 8
# Sample images shipped inside wheels (fetched with ``pip download --no-deps``): wheel name
# prefix → {member: source}. scipy 1.9 is the last release that ships its images in the wheel.
WHEEL_IMAGES = {
    "scipy-1.9.3-": {"scipy/misc/ascent.dat": "ascent", "scipy/misc/face.dat": "raccoon"},
    "matplotlib-": {
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg": "grace_hopper",
        "matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png": "minduka",
        "matplotlib/mpl-data/sample_data/logo2.png": "mpl-logo",
        "matplotlib/mpl-data/sample_data/membrane.dat": "membrane",
    },
    "mahotas-": {
        "mahotas/demos/data/DepartmentStore.jpg": "department-store",
        "mahotas/demos/data/luispedro.jpg": "portrait",
        "mahotas/demos/data/nuclear.png": "nuclear",
    },
}
WHEEL_PACKAGES = ("scipy==1.9.3", "matplotlib", "mahotas")


class _NoGlobals(pickle.Unpickler):
    """scipy's ascent.dat is a pickled list of lists: allow data, never code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a data file")


def _wheel_member_image(member: str, raw: bytes) -> Image.Image:
    if member.endswith("face.dat"):
        return Image.fromarray(np.frombuffer(bz2.decompress(raw), np.uint8).reshape(768, 1024, 3))
    if member.endswith("ascent.dat"):
        return Image.fromarray(np.asarray(_NoGlobals(io.BytesIO(raw)).load(), dtype=np.uint8))
    if member.endswith("membrane.dat"):
        return Image.fromarray(_as_uint8(np.frombuffer(raw, np.float32).reshape(120, 100)))
    return Image.open(io.BytesIO(raw))


def wheel_photos(folder: str | Path | None) -> Iterator[Item]:
    """The sample images inside downloaded wheels in ``folder`` (nothing if absent)."""
    if folder is None or not Path(folder).is_dir():
        return
    for prefix, members in WHEEL_IMAGES.items():
        wheels = sorted(Path(folder).glob(f"{prefix}*.whl"))
        if not wheels:
            continue
        with zipfile.ZipFile(wheels[-1]) as archive:
            for member, name in members.items():
                image = _wheel_member_image(member, archive.read(member))
                if image.mode not in ("L", "I;16", "F"):
                    yield from _variants(name, "colour-photo", image.convert("RGB"))
                yield from _variants(f"{name}-gray", "gray-photo", image.convert("L"))


def rendered_pages(count: int = 6, seed: int = 0) -> Iterator[Item]:
    rng = np.random.default_rng(seed)
    for k in range(count):
        dark = k % 3 == 2
        page = Image.new("L", (620, 820), 30 if dark else 250)
        draw = ImageDraw.Draw(page)
        font = ImageFont.load_default(size=int(rng.integers(10, 20)))
        y = 40
        while y < 780:
            words = " ".join(rng.choice(LOREM, size=int(rng.integers(6, 12))))
            draw.text((40, y), words, fill=220 if dark else 20, font=font)
            y += int(rng.integers(14, 26))
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


def non_radiographs(wheel_dir: str | Path | None = None) -> list[Item]:
    """The whole set, in a fixed order."""
    return [
        *package_photos(),
        *more_package_photos(),
        *wheel_photos(wheel_dir),
        *rendered_pages(),
        *rendered_screenshots(),
        *blanks_and_noise(),
    ]


def source_folds(items: list[Item], folds: int) -> list[int]:
    """A fold index per item; a group (a source and its grayscale copy) never spans two folds."""
    groups = sorted({item.group for item in items})
    fold_of = {group: k % folds for k, group in enumerate(groups)}
    return [fold_of[item.group] for item in items]


# -- procedural negatives: models of natural images and documents, generated on demand -----


def dead_leaves(rng: np.random.Generator, side: int = 128) -> np.ndarray:
    """Occluding discs with power-law radii: the classic model of natural-image statistics."""
    image = np.full((side, side), rng.uniform(), np.float32)
    yy, xx = np.mgrid[:side, :side]
    for _ in range(int(rng.integers(30, 300))):
        radius = side * 0.02 / rng.uniform(0.02, 1) ** 0.7
        cy, cx = rng.uniform(0, side, 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.uniform()
    return image


def power_law_noise(rng: np.random.Generator, side: int = 128) -> np.ndarray:
    """1/f^beta noise (beta 1–3): clouds, terrain, texture."""
    f = np.fft.fftfreq(side)
    radius = np.hypot(f[:, None], f[None, :])
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=(side, side)) + 1j * rng.normal(size=(side, side))) / radius ** rng.uniform(1.0, 3.0)
    image = np.real(np.fft.ifft2(spectrum))
    return ((image - image.min()) / (np.ptp(image) + 1e-9)).astype(np.float32)


def text_page(rng: np.random.Generator, side: int = 160) -> np.ndarray:
    """A page of words in a random size, dark on light or light on dark."""
    dark = rng.random() < 0.3
    page = Image.new(
        "L", (side, int(side * rng.uniform(0.7, 1.4))), int(rng.uniform(0, 60) if dark else rng.uniform(190, 255))
    )
    draw, font, y = ImageDraw.Draw(page), ImageFont.load_default(size=int(rng.integers(6, 18))), 2
    while y < page.height:
        words = " ".join(rng.choice(LOREM, size=8))
        draw.text(
            (int(rng.integers(0, 20)), y),
            words,
            fill=int(rng.uniform(200, 255) if dark else rng.uniform(0, 80)),
            font=font,
        )
        y += int(rng.integers(8, 24))
    return np.asarray(page, np.float32) / 255


def shaded_shapes(rng: np.random.Generator, side: int = 128) -> np.ndarray:
    """Graphics and renderings: shapes filled with gradients on a gradient background, sometimes soft."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[:side, :side] / side

    def ramp() -> np.ndarray:
        angle, lo, hi = rng.uniform(0, 2 * np.pi), rng.uniform(0, 1), rng.uniform(0, 1)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        return lo + (hi - lo) * (t - t.min()) / (np.ptp(t) + 1e-9)

    image = ramp()
    for _ in range(int(rng.integers(2, 12))):
        mask = Image.new("L", (side, side), 0)
        draw = ImageDraw.Draw(mask)
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * side
        w, h = rng.uniform(0.1, 0.7, 2) * side
        shape = int(rng.integers(3))
        if shape == 0:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=255)
        elif shape == 1:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=255)
        else:
            draw.polygon([tuple(p) for p in rng.uniform(0, side, (int(rng.integers(3, 7)), 2))], fill=255)
        alpha = np.asarray(mask, np.float32) / 255
        if rng.random() < 0.5:
            alpha = gaussian_filter(alpha, rng.uniform(0.5, 4))
        image = image * (1 - alpha) + ramp() * alpha
    return np.clip(image, 0, 1).astype(np.float32)


def blobs_and_vessels(rng: np.random.Generator, side: int = 128) -> np.ndarray:
    """Microscopy- and fundus-like images: spots and winding lines on a smooth background."""
    from scipy.ndimage import gaussian_filter

    image = 0.3 + 0.4 * power_law_noise(rng, side) * (rng.random() < 0.7)
    canvas = Image.fromarray((image * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 8))):
        points = np.cumsum(rng.normal(0, side * 0.06, (int(rng.integers(4, 12)), 2)), axis=0) + rng.uniform(0, side, 2)
        draw.line([tuple(p) for p in points], fill=int(rng.uniform(0, 255)), width=int(rng.integers(1, 5)))
    for _ in range(int(rng.integers(5, 80))):
        x, y, r = *rng.uniform(0, side, 2), rng.uniform(1, side * 0.08)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.uniform(0, 255)))
    return np.clip(gaussian_filter(np.asarray(canvas, np.float32) / 255, rng.uniform(0.3, 2.0)), 0, 1).astype(
        np.float32
    )


PROCEDURAL: tuple[Callable[[np.random.Generator], np.ndarray], ...] = (
    dead_leaves,
    power_law_noise,
    text_page,
    shaded_shapes,
    blobs_and_vessels,
)
