"""The package-built non-radiograph set and the gate network's training samples."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.decode import decode_bytes
from core.gate import GATE_SIDE
from training.nonradiographs import PROCEDURAL, Item, non_radiographs, source_folds, wheel_photos


@pytest.fixture(scope="module")
def items() -> list[Item]:
    return non_radiographs()


def test_set_covers_every_kind_and_decodes(items):
    assert {i.kind for i in items} >= {"colour-photo", "gray-photo", "page", "screenshot", "blank", "noise"}
    assert len({i.group for i in items}) >= 25
    for item in items[::7]:
        assert decode_bytes(item.png, item.source).pixels.ndim == 2


def test_a_photo_and_its_grayscale_copy_share_a_group(items):
    groups = {i.source: i.group for i in items}
    assert groups["cat"] == groups["cat-gray"] == "cat"
    assert groups["page-0"] == groups["page-3"]


def test_source_folds_never_split_a_group(items):
    folds = source_folds(items, 3)
    fold_of_group: dict[str, set[int]] = {}
    for item, fold in zip(items, folds, strict=True):
        fold_of_group.setdefault(item.group, set()).add(fold)
    assert all(len(f) == 1 for f in fold_of_group.values())
    assert set(folds) == {0, 1, 2}


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_wheel_photos_read_sample_images_from_downloaded_wheels(tmp_path):
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(tmp_path / "mahotas-1.0-cp311-cp311-linux_x86_64.whl", "w") as wheel:
        wheel.writestr(
            "mahotas/demos/data/DepartmentStore.jpg", _png(rng.integers(0, 255, (60, 80, 3), np.uint8), "JPEG")
        )
        wheel.writestr("mahotas/demos/data/luispedro.jpg", _png(rng.integers(0, 255, (60, 80, 3), np.uint8), "JPEG"))
        wheel.writestr("mahotas/demos/data/nuclear.png", _png(rng.integers(0, 255, (64, 64), np.uint8)))
    with zipfile.ZipFile(tmp_path / "scipy-1.9.3-cp311-cp311-linux_x86_64.whl", "w") as wheel:
        wheel.writestr("scipy/misc/ascent.dat", pickle.dumps([[0, 128, 255]] * 4))
        import bz2

        wheel.writestr("scipy/misc/face.dat", bz2.compress(rng.integers(0, 255, 768 * 1024 * 3, np.uint8).tobytes()))
    got = list(wheel_photos(tmp_path))
    assert {i.group for i in got} == {"department-store", "portrait", "nuclear", "ascent", "raccoon"}
    assert {i.source for i in got if i.group == "portrait"} == {"portrait", "portrait-gray"}
    assert {i.source for i in got if i.group == "nuclear"} == {"nuclear-gray"}  # already grayscale
    ascent = decode_bytes(next(i for i in got if i.group == "ascent").png, "ascent")
    assert ascent.pixels.shape == (4, 3)
    assert list(wheel_photos(tmp_path / "absent")) == []


def test_a_data_pickle_cannot_run_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with zipfile.ZipFile(tmp_path / "scipy-1.9.3-x.whl", "w") as wheel:
        wheel.writestr("scipy/misc/ascent.dat", pickle.dumps(Exploit()))
        wheel.writestr("scipy/misc/face.dat", b"")
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        list(wheel_photos(tmp_path))


@pytest.mark.parametrize("generator", PROCEDURAL, ids=lambda g: g.__name__)
def test_procedural_negatives_are_varied_images_in_unit_range(generator):
    a, b = generator(np.random.default_rng(1)), generator(np.random.default_rng(2))
    for image in (a, b):
        assert image.ndim == 2 and image.dtype == np.float32 and image.min() >= 0 and image.max() <= 1
        assert image.std() > 0.01
    assert a.shape != b.shape or not np.allclose(a, b)


def test_training_thumbnails_are_balanced_and_labelled():
    from training.gate import training_thumbnails

    rng = np.random.default_rng(0)
    positives = [np.full((120, 100), 0.3, np.float32)]
    negatives = [np.full((80, 90), 0.9, np.float32)]
    x, y = training_thumbnails(rng, positives, negatives, 10)
    assert x.shape == (20, GATE_SIDE, GATE_SIDE, 1) and y.tolist() == [1.0] * 10 + [0.0] * 10
    assert x.min() >= 0 and x.max() <= 1
    assert x[:10].max() < 0.75  # radiographs stay radiographs: negatives never leak into the positive half
