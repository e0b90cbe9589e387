"""Decode radiograph files (PNG, JPEG, DICOM) to a 2-D grayscale array in [0, 1].

The format is recognised from the file's bytes, never from its extension. Everything that
cannot be scored raises :class:`ImageRejected` with a one-line reason, and nothing else: sizes
declared in a header are checked before any pixel is decoded (decompression bombs), and any
other failure of a decoder on hostile bytes becomes a rejection, never a crash.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageRejected

MAX_PIXELS = 60_000_000  # refuse before decoding: a 60 MP radiograph does not exist
MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_REASON_CHARS = 200  # decoder messages quoted in a reason are cut to this
# A window whose output spans less than this fraction of the output's magnitude is absurd
# (e.g. WindowWidth 1e30 squeezes every pixel onto the mid level): the full range is shown instead.
MIN_WINDOW_SPAN = 1e-6

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
    # Kept out of repr so that logging an ImageScore/DecodedImage cannot leak them.
    study_uid: str | None = field(default=None, repr=False)
    patient_id: str | None = field(default=None, repr=False)


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


# JPEG start-of-frame markers (they carry the size); C4, C8 and CC are other segments.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment, walking segment headers only."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None


def _dicom_size(data: bytes) -> tuple[int, int] | None:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Columns), int(ds.Rows)
    except Exception:  # unreadable headers are reported by the decoder itself
        return None


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file's header declares it, without decoding pixels; None if unknown.

    Reads PNG IHDR, the JPEG frame header, the GIF logical screen and DICOM Rows/Columns, so
    it also works on the first few hundred kilobytes of a file.
    """
    fmt = sniff_format(data)
    if fmt == "PNG":
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return None
    if fmt == "JPEG":
        return _jpeg_size(data)
    if fmt == "GIF":
        return (int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")) if len(data) >= 10 else None
    if fmt == "DICOM":
        return _dicom_size(data)
    return None


def read_file(path: str | Path, name: str | None = None, *, max_file_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A file's bytes; an unreadable or oversized file is refused (ImageRejected) before it is read."""
    path = Path(path)
    label = name or path.name
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageRejected(label, f"cannot be read ({err.strerror or err})") from None
    if size > max_file_bytes:
        raise ImageRejected(label, f"file is {size / 2**20:.0f} MB, above the {max_file_bytes / 2**20:.0f} MB limit")
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageRejected(label, f"cannot be read ({err.strerror or err})") from None


def decode_file(
    path: str | Path, name: str | None = None, *, max_pixels: int = MAX_PIXELS, max_file_bytes: int = MAX_FILE_BYTES
) -> DecodedImage:
    """Read and decode one file from disk."""
    label = name or Path(path).name
    data = read_file(path, label, max_file_bytes=max_file_bytes)
    return decode_bytes(data, label, max_pixels=max_pixels, max_file_bytes=max_file_bytes)


def decode_bytes(
    data: bytes, name: str, *, max_pixels: int = MAX_PIXELS, max_file_bytes: int = MAX_FILE_BYTES
) -> DecodedImage:
    """Decode an in-memory file; ``name`` is used in messages only. Raises only ImageRejected."""
    if not data:
        raise ImageRejected(name, "file is empty (0 bytes)")
    if len(data) > max_file_bytes:
        raise ImageRejected(
            name, f"file is {len(data) / 2**20:.0f} MB, above the {max_file_bytes / 2**20:.0f} MB limit"
        )
    fmt = sniff_format(data)
    try:
        if fmt == "DICOM" or (not fmt and name.lower().endswith((".dcm", ".dicom"))):
            pixels, meta = _decode_dicom(data, name, max_pixels)
        elif fmt in ("PNG", "JPEG"):
            pixels, meta = _decode_raster(data, name, fmt, max_pixels)
        elif fmt == "GIF" and _is_animated(data):
            raise ImageRejected(name, "animated GIF (several frames) is not supported; export one frame as PNG")
        elif fmt:
            raise ImageRejected(name, f"{fmt} files are not supported (use PNG, JPEG or DICOM)")
        else:
            raise ImageRejected(name, "not a PNG, JPEG or DICOM image")
    except ImageRejected:
        raise
    except MemoryError:
        raise ImageRejected(name, "image is too large to decode in the memory available") from None
    except Exception as err:  # any other decoder failure on hostile bytes: a rejection, not a crash
        raise ImageRejected(name, f"{fmt or 'file'} is corrupt ({_one_line(err)})") from None
    if pixels.ndim != 2 or not np.all(np.isfinite(pixels)):
        raise ImageRejected(name, "image contains non-finite pixel values")
    return DecodedImage(name=name, pixels=pixels, meta=meta)


def _one_line(err: BaseException) -> str:
    """An exception as a short single line (decoders' messages can span lines)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _is_animated(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return bool(getattr(image, "is_animated", False))
    except Exception:  # unreadable: reported as an unsupported format anyway
        return False


def _check_pixels(name: str, width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    if width <= 0 or height <= 0:
        raise ImageRejected(name, f"image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageRejected(name, f"image declares {width}×{height} pixels, above the {max_pixels:,} pixel limit")


def _to_unit_range(values: np.ndarray) -> np.ndarray:
    """Min–max scale to float32 [0, 1]; a constant image becomes all zeros.

    The arithmetic runs in the input's precision (float64 stays float64) so that a narrow
    range far from zero is not flattened by float32 rounding.
    """
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32)
    lo, hi = float(values.min()), float(values.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        return values.astype(np.float32)  # caught by the caller's finiteness check
    if hi - lo <= 0:
        return np.zeros(values.shape, np.float32)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _colourfulness(image: Image.Image) -> float:
    if image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "LA"):
        return 0.0
    small = image.convert("RGB")
    small.thumbnail((256, 256))
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32)
    return float(hsv[..., 1].mean() / 255.0)


def _decode_raster(data: bytes, name: str, fmt: str, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ImageMeta]:
    declared = declared_size(data)
    if declared is not None:  # before Pillow sees the file: it would warn or allocate first
        _check_pixels(name, *declared, max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
        _check_pixels(name, *image.size, max_pixels)
        if getattr(image, "n_frames", 1) > 1:
            raise ImageRejected(name, f"{fmt} has {image.n_frames} frames; only single images are supported")
        image.load()
        if fmt == "JPEG":
            image = ImageOps.exif_transpose(image)
    except ImageRejected:
        raise
    except Image.DecompressionBombError:
        raise ImageRejected(name, f"image is too large to decode (above the {max_pixels:,} pixel limit)") from None
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as err:
        raise ImageRejected(name, f"{fmt} is truncated or corrupt ({_one_line(err)})") from None

    mode = image.mode
    colourfulness = _colourfulness(image)
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        bits = 16 if mode.startswith("I;16") or values.max() > 255 else 8
        pixels = _to_unit_range(values) if bits > 8 else values / 255.0
    else:
        if mode == "CMYK":
            image = image.convert("RGB")
        if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
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
    """A short text attribute, decoded from its raw bytes.

    Going through ``ds.get`` would run pydicom's value validation, whose warnings quote the
    value (e.g. a malformed UID) into stderr and the logs; identifiers must never get there.
    """
    from pydicom.charset import decode_bytes as decode_text
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    value = ds.get_item(tag).value
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            charset = ds._character_set
            encodings = [charset] if isinstance(charset, str) else list(charset)
            text = decode_text(value, encodings or ["iso8859"], set())
        except Exception:  # an unknown or broken character set: keep what is legible
            text = value.decode("latin-1")
    else:
        text = str(value)
    return text.strip(" \x00").strip() or None


PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _ensure_transfer_syntax(ds) -> None:
    """Files without a file meta header (old ACR-NEMA style): infer the syntax from how it was read."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    pixel = ds[next(k for k in PIXEL_KEYWORDS if k in ds)]
    if pixel.is_undefined_length:  # encapsulated (compressed): the codec cannot be guessed
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return
    syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax


def _missing_codec_reason(ds) -> str | None:
    """A reason when the pixel data is compressed with a codec that is not installed here."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        return "DICOM has no transfer syntax in its file meta header, so its pixel data cannot be interpreted"
    if not syntax.is_compressed:
        return None
    try:
        from pydicom.pixels import get_decoder

        available = get_decoder(syntax).is_available
    except (ImportError, NotImplementedError, ValueError):
        available = False
    if available:
        return None
    return f"DICOM pixel data is compressed as {syntax.name} and no decoder for it is installed here; export it uncompressed or as PNG"


def _decode_dicom(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ImageMeta]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as err:
        raise ImageRejected(name, f"DICOM cannot be parsed ({_one_line(err)})") from None
    if len(ds) == 0:
        raise ImageRejected(name, "DICOM is truncated or damaged (no data elements could be read)")
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise ImageRejected(name, "DICOM has no pixel data (not an image object)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise ImageRejected(name, "DICOM lacks valid Rows/Columns") from None
    _check_pixels(name, cols, rows, max_pixels)
    if frames > 1:
        raise ImageRejected(name, f"multi-frame DICOM ({frames} frames) is not supported; export a single frame")
    _ensure_transfer_syntax(ds)
    reason = _missing_codec_reason(ds)
    if reason:
        raise ImageRejected(name, reason)
    try:
        arr = ds.pixel_array
    except Exception as err:  # pydicom raises many types for data it cannot decode
        short = re.search(r"less than expected \((\d+) vs (\d+) bytes\)", str(err))
        if short:
            got, want = short.groups()
            raise ImageRejected(name, f"DICOM pixel data is truncated ({got} of {want} bytes)") from None
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", str(syntax)) if syntax else "unknown transfer syntax"
        raise ImageRejected(name, f"DICOM pixel data ({syntax_name}) cannot be decoded: {_one_line(err)}") from None

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        arr = apply_color_lut(arr, ds)
    if arr.ndim not in (2, 3):
        raise ImageRejected(name, f"DICOM pixel data has an unexpected shape {arr.shape}")
    colourfulness = 0.0
    if samples > 1 or arr.ndim == 3:
        if not np.all(np.isfinite(arr)):
            raise ImageRejected(name, "DICOM contains non-finite pixel values")
        rgb = Image.fromarray(_to_uint8(arr))
        colourfulness = _colourfulness(rgb)
        values = np.asarray(rgb.convert("L"), dtype=np.float32)
    else:
        if not np.all(np.isfinite(arr)):
            raise ImageRejected(name, "DICOM contains non-finite pixel values")
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ImageRejected(name, "DICOM rescale (RescaleSlope/Intercept) gives non-finite pixel values")
        values = _apply_window(values, ds)
        if photometric == "MONOCHROME1":
            values = values.max() + values.min() - values
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
    """VOI LUT or window centre/width; absurd or missing windows fall back to the full range.

    Absurd means: pydicom refuses it (width < 1), it gives non-finite values, or it squeezes
    every pixel onto (nearly) one level, as a huge width or a window outside the data does.
    """
    from pydicom.pixels import apply_voi_lut

    has_window = "WindowWidth" in ds or "VOILUTSequence" in ds
    if not has_window:
        return values
    try:
        with np.errstate(all="ignore"):
            windowed = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
    except Exception:  # malformed VOI attributes: show the modality values instead
        return values
    if windowed.shape != values.shape or not np.all(np.isfinite(windowed)):
        return values
    lo, hi = float(windowed.min()), float(windowed.max())
    if hi - lo <= MIN_WINDOW_SPAN * max(abs(lo), abs(hi)):
        return values
    return windowed


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    scaled = _to_unit_range(arr.astype(np.float64)) * 255.0
    return scaled.astype(np.uint8)
