"""Decoding of PNG, JPEG and DICOM, and the reasons given for what is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.decode import decode_bytes, decode_file, sniff_format
from core.errors import ImageRejected
from tests.conftest import png_bytes, synthetic_radiograph


def test_png_8bit_keeps_values():
    raw = synthetic_radiograph()
    image = decode_bytes(png_bytes(raw), "a.png")
    assert image.pixels.shape == raw.shape
    assert image.meta.source_format == "PNG" and image.meta.bits == 8
    np.testing.assert_allclose(image.pixels, raw / 255.0, atol=1e-6)


def test_png_16bit_uses_full_range():
    raw = (np.linspace(1000, 4000, 64 * 48).reshape(64, 48)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(raw).save(buffer, format="PNG")
    image = decode_bytes(buffer.getvalue(), "deep.png")
    assert image.meta.bits == 16
    assert image.pixels.min() == pytest.approx(0.0) and image.pixels.max() == pytest.approx(1.0)
    # order is preserved: brighter source pixel stays brighter
    assert image.pixels[-1, -1] > image.pixels[0, 0]


def test_jpeg_exif_orientation_is_honoured():
    raw = np.zeros((40, 100), np.uint8)
    raw[:, :10] = 255  # bright stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    buffer = io.BytesIO()
    Image.fromarray(raw).save(buffer, format="JPEG", exif=exif, quality=95)
    image = decode_bytes(buffer.getvalue(), "phone.jpg")
    assert image.pixels.shape == (100, 40)
    assert image.pixels[:10].mean() > 0.8  # the stripe is now along the top


def test_rgb_png_is_grayscale_with_colourfulness():
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = 255
    image = decode_bytes(png_bytes(rgb), "red.png")
    assert image.pixels.ndim == 2
    assert image.meta.colourfulness > 0.9


def test_dicom_monochrome1_is_inverted(dicom_dir):
    """RG3 is a real extremity CR in MONOCHROME1: after decoding, bone is bright."""
    import pydicom

    path = dicom_dir / "RG3_UNCR.dcm"
    image = decode_file(path)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert image.meta.photometric == "MONOCHROME1" and image.meta.source_format == "DICOM"
    assert image.pixels.shape == raw.shape
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    # inversion: the brightest stored values (least attenuation) become the darkest pixels
    high = raw >= np.percentile(raw, 95)
    low = raw <= np.percentile(raw, 5)
    assert image.pixels[high].mean() < image.pixels[low].mean()
    assert image.meta.body_part == "EXTREMITY" and image.meta.patient_id


def test_dicom_chest_decodes(dicom_dir):
    image = decode_file(dicom_dir / "RG1_UNCR.dcm")
    assert image.pixels.shape == (1955, 1841)
    assert image.meta.body_part == "CHEST"


def test_multiframe_dicom_refused(dicom_dir):
    with pytest.raises(ImageRejected, match="multi-frame"):
        decode_file(dicom_dir / "SC_rgb_2frame.dcm")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not a PNG, JPEG or DICOM"),
        (b"%PDF-1.4 fake", "PDF files are not supported"),
        (b"GIF89a" + b"\x00" * 20, "GIF files are not supported"),
    ],
)
def test_refusals_name_the_file(data, reason):
    with pytest.raises(ImageRejected, match=reason) as info:
        decode_bytes(data, "upload.png")
    assert str(info.value).startswith("upload.png:")


def test_truncated_png_refused():
    data = png_bytes(synthetic_radiograph(200, 200))
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        decode_bytes(data[: len(data) // 2], "cut.png")


def test_sniff_ignores_extension():
    assert sniff_format(png_bytes(synthetic_radiograph())) == "PNG"
