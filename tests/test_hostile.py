"""Hostile input: every bad file is refused with a one-line reason naming it; the rest still score.

The same corpus goes through the decoder, ``Predictor.score_files``, the CLI and the dashboard
service, so all of them are held to one behaviour.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.decode import MAX_PIXELS, declared_size, decode_bytes, decode_file
from core.errors import ImageRejected
from core.limits import Limits, StudyRejected, check_study, enforce_study
from tests.conftest import ROOT, png_bytes, synthetic_radiograph

# --------------------------------------------------------------------------- builders


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A well-formed 8-bit gray PNG declaring ``width``×``height``; IDAT holds ``rows`` zero rows."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray, **params) -> bytes:
    return encode(Image.fromarray(array), "JPEG", quality=95, **params)


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real JPEG (with an EXIF segment before the frame header) whose SOF0 declares another size."""
    exif = Image.Exif()
    exif[0x010F] = "BoneSentinel test"
    data = bytearray(jpeg_bytes(synthetic_radiograph(32, 32), exif=exif))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_bytes(frames: int) -> bytes:
    images = [Image.fromarray(synthetic_radiograph(32, 32, seed=k)).convert("P") for k in range(frames)]
    return encode(images[0], "GIF", save_all=frames > 1, append_images=images[1:], loop=0, duration=100)


def tiff_bytes(frames: int, mode: str = "L") -> bytes:
    array = synthetic_radiograph(32, 32)
    image = Image.fromarray(array.astype(np.float32)) if mode == "F" else Image.fromarray(array)
    return encode(image, "TIFF", save_all=frames > 1, append_images=[image.copy() for _ in range(frames - 1)])


def small_rg3(dicom_dir: Path):
    """RG3 (a real extremity CR, MONOCHROME1), cropped to 256×256 around the bone to keep tests fast."""
    import pydicom

    ds = pydicom.dcmread(dicom_dir / "RG3_UNCR.dcm")
    crop = np.ascontiguousarray(ds.pixel_array[752:1008, 752:1008])
    ds.Rows, ds.Columns = crop.shape
    ds.PixelData = crop.tobytes()
    return ds


def dicom_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def windowed_rg3(dicom_dir: Path, width: float | None) -> bytes:
    ds = small_rg3(dicom_dir)
    if width is None:
        del ds.WindowWidth, ds.WindowCenter
    else:
        ds.WindowWidth = width
    return dicom_bytes(ds)


def float_dicom(values: np.ndarray) -> bytes:
    """A minimal single-frame DICOM with 32-bit float pixel data (FloatPixelData)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.astype("<f4").tobytes()
    return dicom_bytes(ds)


@dataclass(frozen=True)
class Case:
    """One file of the hostile corpus: ``reason`` is a fragment of the expected refusal, None if it scores."""

    name: str
    data: bytes
    reason: str | None


def hostile_corpus(dicom_dir: Path) -> list[Case]:
    """Every hostile case, plus files that look hostile but must decode, plus two good radiographs."""
    good = png_bytes(synthetic_radiograph(seed=1))
    rg3 = dicom_bytes(small_rg3(dicom_dir))
    jpeg = jpeg_bytes(synthetic_radiograph(seed=2))
    no_pixels = small_rg3(dicom_dir)
    del no_pixels.PixelData
    rescale_inf = small_rg3(dicom_dir)
    rescale_inf.RescaleSlope, rescale_inf.RescaleIntercept = "1e308", "0"
    nan_pixels = np.ones((16, 16), np.float32)
    nan_pixels[3, 4] = np.nan
    return [
        Case("good1.png", good, None),
        Case("empty.png", b"", "empty"),
        Case("cut.png", good[: len(good) // 2], "truncated or corrupt"),
        Case("cut.jpg", jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        Case("notes.png", b"Patient seen, see attached.\n" * 4, "not a PNG, JPEG or DICOM"),
        Case("report.png", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "PDF files are not supported"),
        Case("jpeg_named.png", jpeg, None),
        Case("png_named.dcm", png_bytes(synthetic_radiograph(seed=3)), None),
        Case("bomb.png", png_bomb(100_000, 100_000, rows=4), "pixel limit"),
        Case("bomb_64mp.png", png_bomb(8_000, 8_000), "pixel limit"),
        Case("bomb.jpg", jpeg_with_size(60_000, 60_000), "pixel limit"),
        Case("animated.gif", gif_bytes(3), "animated GIF"),
        Case("pages.tif", tiff_bytes(3), "TIFF files are not supported"),
        Case("float.tif", tiff_bytes(1, mode="F"), "TIFF files are not supported"),
        Case("no_pixels.dcm", dicom_bytes(no_pixels), "no pixel data"),
        Case("jpeg_lossless.dcm", (dicom_dir / "JPEG-LL.dcm").read_bytes(), "no decoder"),
        Case("two_frames.dcm", (dicom_dir / "SC_rgb_2frame.dcm").read_bytes(), "multi-frame"),
        Case("nan.dcm", float_dicom(nan_pixels), "non-finite"),
        Case("rescale_inf.dcm", dicom_bytes(rescale_inf), "non-finite"),
        Case("window_0.dcm", windowed_rg3(dicom_dir, 0), None),
        Case("window_neg.dcm", windowed_rg3(dicom_dir, -5), None),
        Case("window_huge.dcm", windowed_rg3(dicom_dir, 1e30), None),
        Case("good2.png", png_bytes(synthetic_radiograph(seed=4)), None),
        Case("cut.dcm", rg3[: len(rg3) // 2], "DICOM pixel data is truncated"),
        Case("header_only.dcm", rg3[:200], "DICOM is truncated or damaged"),
    ]


@pytest.fixture(scope="module")
def corpus(dicom_dir) -> list[Case]:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed, so JPEG-LL.dcm is not a missing-codec case here")
    return hostile_corpus(dicom_dir)


# --------------------------------------------------------------------------- decoder


def test_corpus_through_decoder(corpus: list[Case]) -> None:
    """Each bad file raises ImageRejected naming it with a one-line reason; the others decode."""
    for case in corpus:
        if case.reason is None:
            image = decode_bytes(case.data, case.name)
            assert image.pixels.ndim == 2 and image.pixels.dtype == np.float32, case.name
            assert np.isfinite(image.pixels).all() and 0 <= image.pixels.min() <= image.pixels.max() <= 1, case.name
            continue
        with pytest.raises(ImageRejected) as info:
            decode_bytes(case.data, case.name)
        message = str(info.value)
        assert message.startswith(f"{case.name}: "), message
        assert case.reason in info.value.reason, message
        assert "\n" not in message and len(message) < 300, message


def test_extension_is_ignored_for_content(corpus: list[Case]) -> None:
    """JPEG bytes named .png decode as JPEG; PNG bytes named .dcm decode as PNG."""
    by_name = {case.name: case for case in corpus}
    assert decode_bytes(by_name["jpeg_named.png"].data, "jpeg_named.png").meta.source_format == "JPEG"
    assert decode_bytes(by_name["png_named.dcm"].data, "png_named.dcm").meta.source_format == "PNG"


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (8_000, 8_000)])
def test_png_bomb_refused_from_header_without_decoding(monkeypatch, width: int, height: int) -> None:
    """Refused from IHDR alone: Pillow never opens it, it is fast, and nothing big is allocated."""
    bomb = png_bomb(width, height, rows=None if width * height < 10**8 else 4)
    assert declared_size(bomb) == (width, height) and width * height > MAX_PIXELS

    def no_open(*args, **kwargs):
        raise AssertionError("Image.open was called on a decompression bomb")

    monkeypatch.setattr(Image, "open", no_open)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageRejected, match=rf"{width}×{height} pixels, above the .* pixel limit"):
            decode_bytes(bomb, "bomb.png")
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 8 * 2**20  # the 64-MP bomb would need 64 MB for its pixels alone


def test_jpeg_bomb_refused_from_frame_header() -> None:
    data = jpeg_with_size(60_000, 60_000)
    assert declared_size(data) == (60_000, 60_000)
    with pytest.raises(ImageRejected, match="60000×60000 pixels"):
        decode_bytes(data, "bomb.jpg")


def test_pixel_and_byte_limits_are_parameters(tmp_path: Path) -> None:
    data = png_bytes(synthetic_radiograph(100, 100))
    assert decode_bytes(data, "ok.png", max_pixels=10_000).pixels.shape == (100, 100)
    with pytest.raises(ImageRejected, match="9,999 pixel limit"):
        decode_bytes(data, "big.png", max_pixels=9_999)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    with pytest.raises(ImageRejected, match="MB limit"):
        decode_file(path, max_file_bytes=len(data) - 1)


def test_single_frame_gif_reason_differs_from_animated() -> None:
    with pytest.raises(ImageRejected, match="GIF files are not supported") as info:
        decode_bytes(gif_bytes(1), "still.gif")
    assert "animated" not in info.value.reason


@pytest.mark.parametrize("mode", ["L", "P", "P+transparency", "RGBA", "LA", "I;16"])
def test_png_modes_decode_to_grayscale(mode: str) -> None:
    """A bright square on black, in every PNG colour mode; transparency counts as black."""
    square = np.zeros((24, 32), np.uint8)
    square[4:12, 8:20] = 255
    if mode == "I;16":
        image = Image.fromarray(square.astype(np.uint16) * 257)
    elif mode.startswith("P"):
        image = Image.fromarray(square).convert("P")
        if mode == "P+transparency":
            # the square's palette entry is transparent, so it must come out black
            image.info["transparency"] = image.getpixel((8, 4))
    elif mode in ("RGBA", "LA"):
        alpha = np.full_like(square, 255)
        alpha[4:8] = 0  # top of the square transparent
        base = Image.fromarray(square).convert(mode[:-1])
        image = Image.merge(mode, (*base.split(), Image.fromarray(alpha)))
    else:
        image = Image.fromarray(square)
    decoded = decode_bytes(encode(image, "PNG"), f"{mode}.png")
    pixels = decoded.pixels
    assert pixels.shape == (24, 32) and pixels.dtype == np.float32
    assert pixels[0, 0] == pytest.approx(0.0)
    if mode == "P+transparency":
        assert pixels[4:12, 8:20].max() == pytest.approx(0.0)
    elif mode in ("RGBA", "LA"):
        assert pixels[4:8, 8:20].max() == pytest.approx(0.0)
        assert pixels[8:12, 8:20].min() == pytest.approx(1.0)
    else:
        assert pixels[4:12, 8:20].min() == pytest.approx(1.0)


def test_cmyk_jpeg_decodes_to_grayscale() -> None:
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    data = encode(Image.fromarray(ramp).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    pixels = decode_bytes(data, "cmyk.jpg").pixels
    assert pixels.shape == (32, 64)
    assert np.corrcoef(pixels.ravel(), ramp.ravel())[0, 1] > 0.99
    assert pixels[:, :4].mean() < 0.1 and pixels[:, -4:].mean() > 0.9


@pytest.mark.parametrize("width", [0, -5, 1e30])
def test_absurd_dicom_window_falls_back_to_full_range(dicom_dir: Path, width: float) -> None:
    expected = decode_bytes(windowed_rg3(dicom_dir, None), "plain.dcm").pixels
    sane = decode_bytes(windowed_rg3(dicom_dir, 200), "sane.dcm").pixels  # 450–650 of the crop's 256–703
    pixels = decode_bytes(windowed_rg3(dicom_dir, width), "absurd.dcm").pixels
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    assert len(np.unique(pixels)) > 100  # not collapsed to a flat image
    assert not np.allclose(sane, expected, atol=1e-3)  # a sane window is applied, so the fallback is visible


def test_palette_dicom_without_file_meta_decodes(dicom_dir: Path) -> None:
    """OT-PAL-8-face has no transfer syntax and PALETTE COLOR pixels: inferred, then mapped through the LUT."""
    image = decode_file(dicom_dir / "OT-PAL-8-face.dcm")
    assert image.pixels.shape == (480, 640) and image.meta.photometric == "PALETTE COLOR"
    assert image.meta.colourfulness > 0.2  # the LUT was applied: a colour photograph, which the gate refuses
    assert image.pixels.std() > 0.1


def test_finite_float_dicom_decodes_but_nan_is_refused() -> None:
    """FloatPixelData is a real route to NaN: finite data scores, one NaN refuses the file."""
    values = np.linspace(-1, 3, 64, dtype=np.float32).reshape(8, 8)
    pixels = decode_bytes(float_dicom(values), "float.dcm").pixels
    np.testing.assert_allclose(pixels, (values - values.min()) / (values.max() - values.min()), atol=1e-6)
    values[2, 2] = np.inf
    with pytest.raises(ImageRejected, match="non-finite"):
        decode_bytes(float_dicom(values), "inf.dcm")


def test_unexpected_decoder_exception_becomes_rejection(monkeypatch) -> None:
    """A decoder bug on hostile bytes (any exception type) is a rejection, not a crash."""
    from PIL import ImageOps

    def explode(image):
        raise KeyError("malformed EXIF")

    monkeypatch.setattr(ImageOps, "exif_transpose", explode)
    with pytest.raises(ImageRejected, match=r"JPEG is corrupt \('malformed EXIF'\)"):
        decode_bytes(jpeg_bytes(synthetic_radiograph()), "odd.jpg")


def test_patient_id_is_not_in_repr(dicom_dir: Path) -> None:
    image = decode_file(dicom_dir / "RG3_UNCR.dcm")
    assert image.meta.patient_id
    assert image.meta.patient_id not in repr(image.meta) and image.meta.study_uid not in repr(image)


# --------------------------------------------------------------------------- study limits


def test_check_study_accepts_a_normal_study(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"{k}.png")
        paths[-1].write_bytes(png_bytes(synthetic_radiograph(seed=k)))
    assert check_study(paths) == []
    assert check_study([(p.name, p.read_bytes()) for p in paths]) == []
    enforce_study(paths)


def test_check_study_counts_files_bytes_and_pixels(tmp_path: Path) -> None:
    files = [(f"{k}.png", png_bytes(synthetic_radiograph(100, 100, seed=k))) for k in range(4)]
    total = sum(len(data) for _, data in files)
    assert check_study(files, Limits(max_files=3)) == ["the study has 4 files, above the limit of 3 per study"]
    (reason,) = check_study(files, Limits(max_study_bytes=total - 1))
    assert "MB in all" in reason
    (reason,) = check_study(files, Limits(max_study_pixels=39_999))
    assert "40,000 pixels in all" in reason
    assert check_study(files, Limits(max_study_pixels=40_000)) == []


def test_check_study_leaves_per_file_refusals_to_the_decoder(tmp_path: Path) -> None:
    """A bomb or an oversized file is refused on its own; it must not sink the whole study."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(100_000, 100_000, rows=1))
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(synthetic_radiograph()))
    missing = tmp_path / "missing.png"
    assert check_study([bomb, good, missing], Limits(max_study_pixels=10**6)) == []
    with pytest.raises(StudyRejected, match="pixel limit") as info:
        enforce_study([good, good], Limits(max_study_pixels=good_pixels(good) * 2 - 1))
    assert len(info.value.reasons) == 1 and "\n" not in str(info.value)


def good_pixels(path: Path) -> int:
    width, height = declared_size(path.read_bytes())
    return width * height


def test_declared_size_reads_headers_only(dicom_dir: Path) -> None:
    assert declared_size(png_bytes(synthetic_radiograph(30, 20))) == (20, 30)
    assert declared_size(jpeg_with_size(123, 45)) == (123, 45)
    assert declared_size(gif_bytes(2)) == (32, 32)
    assert declared_size((dicom_dir / "RG1_UNCR.dcm").read_bytes()[:4096]) == (1841, 1955)
    assert declared_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None
    assert declared_size(b"hello") is None
    with pytest.raises(ValueError):
        Limits(max_files=0)


# --------------------------------------------------------------------------- whole pipeline


def test_corpus_through_score_files(tiny_predictor, corpus: list[Case]) -> None:
    scores = tiny_predictor.score_files([(case.name, case.data) for case in corpus], explain=False)
    assert [s.name for s in scores] == [case.name for case in corpus]
    for case, score in zip(corpus, scores, strict=True):
        if case.reason is None:
            assert score.scored and 0.0 <= score.probability <= 1.0 and score.error is None, (case.name, score.error)
        else:
            assert not score.scored and case.reason in score.error, (case.name, score.error)
            assert "could not be read" not in score.error  # i.e. not the catch-all for decoder bugs


def test_corpus_through_cli(tiny_bundle: Path, corpus: list[Case], tmp_path: Path) -> None:
    """Exit 3, a reason for every bad file, a probability for every good one, no traceback."""
    paths = []
    for case in corpus:
        paths.append(tmp_path / case.name)
        paths[-1].write_bytes(case.data)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "core.predict", "--bundle", str(tiny_bundle), *map(str, paths)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 3, proc.stderr
    document = json.loads(proc.stdout)
    images = document["images"]
    assert [image["file"] for image in images] == [case.name for case in corpus]
    for case, image in zip(corpus, images, strict=True):
        if case.reason is None:
            assert image["error"] is None and 0.0 <= image["probability"] <= 1.0, image
        else:
            assert image["probability"] is None and case.reason in image["error"], image
    n_bad = sum(case.reason is not None for case in corpus)
    assert document["study"]["rejected"] == n_bad and document["study"]["scored"] == len(corpus) - n_bad


def test_corpus_through_dashboard_log(tiny_predictor, corpus: list[Case], tmp_path: Path) -> None:
    """The logged study records which files were refused and why, in upload order."""
    from dashboard.service import StudyForm, analyze_study
    from dashboard.store import get_study, make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    try:
        outcome = analyze_study(
            tiny_predictor, [(case.name, case.data) for case in corpus], StudyForm(), engine=engine, salt=b"x" * 32
        )
        assert outcome.log_error is None and outcome.study_id is not None
        record = get_study(engine, outcome.study_id)
    finally:
        engine.dispose()
    n_bad = sum(case.reason is not None for case in corpus)
    assert record.n_images == len(corpus) and record.n_rejected == n_bad and record.n_scored == len(corpus) - n_bad
    assert record.probability is not None
    for case, image in zip(corpus, record.images, strict=True):
        assert image.file_name == case.name
        if case.reason is None:
            assert image.error is None and image.probability is not None, (case.name, image.error)
        else:
            assert image.probability is None and case.reason in image.error, (case.name, image.error)
            assert image.gate_status == "error" and image.gate_reason == image.error
