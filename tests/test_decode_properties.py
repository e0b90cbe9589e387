"""Property-based tests of the decoder: hostile bytes are refused, valid images always decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.decode import JPEG_MAGIC, PNG_MAGIC, decode_bytes
from core.errors import ImageRejected

PROPERTY_SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
PREFIXES = [
    b"",
    PNG_MAGIC,
    PNG_MAGIC + b"\x00\x00\x00\x0dIHDR",
    JPEG_MAGIC,
    JPEG_MAGIC + b"\xe0\x00\x10JFIF\x00",
    b"\x00" * 128 + b"DICM",
    b"GIF89a",
    b"II*\x00",
    b"%PDF-1.4",
]
NAMES = ["upload.png", "upload.jpg", "upload.dcm", "upload"]


def assert_valid(pixels: np.ndarray) -> None:
    assert pixels.ndim == 2 and pixels.dtype == np.float32
    assert np.isfinite(pixels).all()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def decode_or_reject(data: bytes, name: str) -> None:
    """The only allowed outcomes: a valid image, or ImageRejected whose message names the file."""
    try:
        image = decode_bytes(data, name)
    except ImageRejected as err:
        assert str(err).startswith(f"{name}: ") and err.reason and "\n" not in err.reason
        return
    assert_valid(image.pixels)


def tiny_dicom() -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = 12, 10
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 2000, 1000
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.arange(120, dtype="<u2").reshape(12, 10).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def seed_files() -> list[bytes]:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (12, 10), dtype=np.uint8)
    files = []
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, format=fmt)
        files.append(buffer.getvalue())
    files.append(tiny_dicom())
    return files


SEEDS = seed_files()


@PROPERTY_SETTINGS
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=1024), name=st.sampled_from(NAMES))
def test_random_bytes_only_raise_image_rejected(prefix: bytes, body: bytes, name: str) -> None:
    decode_or_reject(prefix + body, name)


@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")  # pydicom on flipped file-meta bytes
@PROPERTY_SETTINGS
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.floats(0.05, 1.0),
    name=st.sampled_from(NAMES),
)
def test_corrupted_valid_files_only_raise_image_rejected(
    seed: int, edits: list[tuple[float, int]], cut: float, name: str
) -> None:
    """Byte flips and truncation of real PNG/JPEG/DICOM files reach deep into the decoders."""
    data = bytearray(SEEDS[seed])
    for where, value in edits:
        data[int(where * len(data))] = value
    decode_or_reject(bytes(data[: max(1, int(cut * len(data)))]), name)


def make_image(mode: str, width: int, height: int, seed: int) -> tuple[Image.Image, np.ndarray]:
    """An image of ``mode`` and its 8-bit (or 16-bit) source array."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        raw = rng.integers(0, 65535, (height, width), dtype=np.uint16, endpoint=True)
        return Image.fromarray(raw), raw
    if mode == "P":
        raw = rng.integers(0, 255, (height, width), dtype=np.uint8, endpoint=True)
        image = Image.frombytes("P", (width, height), raw.tobytes())
        image.putpalette(rng.integers(0, 255, 768, dtype=np.uint8, endpoint=True).tobytes())
        return image, raw
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    raw = rng.integers(0, 255, (height, width, channels), dtype=np.uint8, endpoint=True)
    return Image.fromarray(raw[..., 0] if channels == 1 else raw), raw


@PROPERTY_SETTINGS
@given(
    fmt_mode=st.sampled_from(
        [("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"), ("JPEG", "L"), ("JPEG", "RGB")]
    ),
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_images_decode_to_unit_grayscale(fmt_mode: tuple[str, str], width: int, height: int, seed: int) -> None:
    fmt, mode = fmt_mode
    image, raw = make_image(mode, width, height, seed)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    decoded = decode_bytes(buffer.getvalue(), f"x.{fmt.lower()}")
    assert decoded.pixels.shape == (height, width)
    assert_valid(decoded.pixels)
    assert decoded.meta.source_format == fmt and (decoded.meta.width, decoded.meta.height) == (width, height)
    if fmt == "PNG" and mode == "L":
        np.testing.assert_allclose(decoded.pixels, raw[..., 0] / 255.0, atol=1e-6)  # lossless and unscaled
    if mode == "I;16":
        lo, hi = raw.min(), raw.max()
        expected = np.zeros(raw.shape) if hi == lo else (raw - float(lo)) / (float(hi) - lo)
        np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)  # full 16-bit range, order kept
