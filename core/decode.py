"""Decode radiograph files (PNG, JPEG, DICOM) to a 2-D grayscale array in [0, 1].

The format is recognised from the file's bytes, never from its extension. Everything that
cannot be scored raises :class:`ImageRejected` with a one-line reason.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageRejected

MAX_PIXELS = 60_000_000  # refuse before decoding: a 60 MP radiograph does not exist
MAX_FILE_BYTES = 100 * 1024 * 1024

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DICOM_MAGIC_OFFSET = 128
OTHER_MAGICS = {
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
    b"%PDF": "PDF",
    b"RIFF": "RIFF/WebP",
    b"PK\x03\x04": "ZIP",
}


@dataclass(frozen=True)
class ImageMeta:
    """What the file says about itself. ``patient_id`` must only ever be stored hashed."""

    source_format: str
    width: int
    height: int
    bits: int
    photometric: str
    colourfulness: float = 0.0  # mean HSV saturation of the source in [0, 1]; 0 for gray
    body_part: str | None = None
    modality: str | None = None
    view_position: str | None = None
    study_uid: str | None = None
    patient_id: str | None = None


@dataclass(frozen=True)
class DecodedImage:
    """``pixels``: float32 (H, W) in [0, 1], bright = dense (bone white)."""

    name: str
    pixels: np.ndarray
    meta: ImageMeta


def sniff_format(data: bytes) -> str:
    """Return "PNG", "JPEG", "DICOM" or the name of an unsupported format; "" if unknown."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "DICOM"
    for magic, name in OTHER_MAGICS.items():
        if data.startswith(magic):
            return name
    return ""


def decode_file(path: str | Path, name: str | None = None) -> DecodedImage:
    """Read and decode one file from disk."""
    path = Path(path)
    label = name or path.name
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageRejected(label, f"cannot be read ({err.strerror or err})") from None
    if size > MAX_FILE_BYTES:
        raise ImageRejected(label, f"file is {size / 2**20:.0f} MB, above the {MAX_FILE_BYTES / 2**20:.0f} MB limit")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageRejected(label, f"cannot be read ({err.strerror or err})") from None
    return decode_bytes(data, label)


def decode_bytes(data: bytes, name: str) -> DecodedImage:
    """Decode an in-memory file; ``name`` is used in messages only."""
    if not data:
        raise ImageRejected(name, "file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageRejected(name, f"file is above the {MAX_FILE_BYTES / 2**20:.0f} MB limit")
    fmt = sniff_format(data)
    if fmt == "DICOM" or (not fmt and name.lower().endswith((".dcm", ".dicom"))):
        pixels, meta = _decode_dicom(data, name)
    elif fmt in ("PNG", "JPEG"):
        pixels, meta = _decode_raster(data, name, fmt)
    elif fmt:
        raise ImageRejected(name, f"{fmt} files are not supported (use PNG, JPEG or DICOM)")
    else:
        raise ImageRejected(name, "not a PNG, JPEG or DICOM image")
    if not np.all(np.isfinite(pixels)):
        raise ImageRejected(name, "image contains non-finite pixel values")
    return DecodedImage(name=name, pixels=pixels, meta=meta)


def _check_pixels(name: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageRejected(name, f"image has no pixels ({width}×{height})")
    if width * height > MAX_PIXELS:
        raise ImageRejected(name, f"image declares {width}×{height} pixels, above the {MAX_PIXELS:,} pixel limit")


def _to_unit_range(values: np.ndarray) -> np.ndarray:
    """Min–max scale to [0, 1]; a constant image becomes all zeros."""
    values = values.astype(np.float32, copy=False)
    lo, hi = float(values.min()), float(values.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        return values  # caught by the caller's finiteness check
    if hi - lo <= 0:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def _colourfulness(image: Image.Image) -> float:
    if image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA"):
        return 0.0
    small = image.convert("RGB")
    small.thumbnail((256, 256))
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32)
    return float(hsv[..., 1].mean() / 255.0)


def _decode_raster(data: bytes, name: str, fmt: str) -> tuple[np.ndarray, ImageMeta]:
    try:
        image = Image.open(io.BytesIO(data))
        _check_pixels(name, *image.size)
        if getattr(image, "n_frames", 1) > 1:
            raise ImageRejected(name, f"{fmt} has {image.n_frames} frames; only single images are supported")
        image.load()
        if fmt == "JPEG":
            image = ImageOps.exif_transpose(image)
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise ImageRejected(name, f"{fmt} is truncated or corrupt ({err})") from None

    mode = image.mode
    colourfulness = _colourfulness(image)
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        bits = 16 if mode.startswith("I;16") or values.max() > 255 else 8
        pixels = _to_unit_range(values) if bits > 8 else values / 255.0
    else:
        if mode == "CMYK":
            image = image.convert("RGB")
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
            # Transparent areas become black, the radiograph background.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, rgba)
        pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        bits = 8
    meta = ImageMeta(
        source_format=fmt,
        width=image.size[0],
        height=image.size[1],
        bits=bits,
        photometric=mode,
        colourfulness=colourfulness,
    )
    return pixels.astype(np.float32, copy=False), meta


def _dicom_text(ds, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _decode_dicom(data: bytes, name: str) -> tuple[np.ndarray, ImageMeta]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as err:
        raise ImageRejected(name, f"DICOM cannot be parsed ({err})") from None
    if "PixelData" not in ds:
        raise ImageRejected(name, "DICOM has no pixel data (not an image object)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise ImageRejected(name, "DICOM lacks valid Rows/Columns") from None
    _check_pixels(name, cols, rows)
    if frames > 1:
        raise ImageRejected(name, f"multi-frame DICOM ({frames} frames) is not supported; export a single frame")
    try:
        arr = ds.pixel_array
    except Exception as err:  # pydicom raises many types for codecs it lacks
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", str(syntax)) if syntax else "unknown transfer syntax"
        raise ImageRejected(name, f"DICOM pixel data ({syntax_name}) cannot be decoded here: {err}") from None

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    colourfulness = 0.0
    if samples > 1 or arr.ndim == 3:
        rgb = Image.fromarray(_to_uint8(arr))
        colourfulness = _colourfulness(rgb)
        values = np.asarray(rgb.convert("L"), dtype=np.float32)
    else:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        values = _apply_window(values, ds)
        if photometric == "MONOCHROME1":
            values = values.max() + values.min() - values
    if not np.all(np.isfinite(values)):
        raise ImageRejected(name, "DICOM contains non-finite pixel values")
    meta = ImageMeta(
        source_format="DICOM",
        width=cols,
        height=rows,
        bits=int(ds.get("BitsStored", 8) or 8),
        photometric=photometric,
        colourfulness=colourfulness,
        body_part=_dicom_text(ds, "BodyPartExamined"),
        modality=_dicom_text(ds, "Modality"),
        view_position=_dicom_text(ds, "ViewPosition"),
        study_uid=_dicom_text(ds, "StudyInstanceUID"),
        patient_id=_dicom_text(ds, "PatientID"),
    )
    return _to_unit_range(values), meta


def _apply_window(values: np.ndarray, ds) -> np.ndarray:
    """VOI LUT or window centre/width; absurd or missing windows fall back to the full range."""
    from pydicom.pixels import apply_voi_lut

    has_window = "WindowWidth" in ds or "VOILUTSequence" in ds
    if not has_window:
        return values
    try:
        windowed = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
    except Exception:  # malformed VOI attributes: show the modality values instead
        return values
    if not np.all(np.isfinite(windowed)) or float(windowed.max() - windowed.min()) <= 0:
        return values
    return windowed


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    scaled = _to_unit_range(arr.astype(np.float32)) * 255.0
    return scaled.astype(np.uint8)
