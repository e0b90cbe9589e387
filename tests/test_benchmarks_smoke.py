"""The benchmark scripts' helpers do what they claim (never their timings: those are machine-dependent)."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from tests.conftest import ROOT, require_knee, synthetic_radiograph


def load_script(name: str):
    """Import benchmarks/<name>.py (a script folder, not a package) as a module."""
    module_name = f"bonesentinel_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def model_input(size: int, seed: int) -> np.ndarray:
    from core.preprocess import preprocess

    return preprocess(synthetic_radiograph(120, 100, seed=seed) / 255.0, size)[None]


def test_naive_gradcam_equals_compiled_gradcam(tiny_predictor):
    bench = load_script("inference")
    model = tiny_predictor.bundle_.model
    for seed in (3, 4):
        x = model_input(tiny_predictor.input_size_, seed)
        _, _, cams = tiny_predictor.explain(x)
        assert cams[0].max() > 0  # a non-trivial map, so equality means something
        naive = bench.make_gradcam_heatmap(x, model)
        assert naive.shape == cams[0].shape
        np.testing.assert_allclose(naive, cams[0], atol=1e-4)


def test_fast_and_naive_paths_agree_on_one_file(tiny_predictor):
    bench = load_script("inference")
    [(name, data)], _ = bench.load_images(1, synthetic=True)
    fast_p, fast_overlay = bench.fast_path(tiny_predictor, name, data)
    naive_p, naive_overlay = bench.naive_path(tiny_predictor.bundle_.model, tiny_predictor.input_size_, name, data)
    assert naive_p == pytest.approx(fast_p, abs=1e-5)  # no calibration in the card: probability = sigmoid(logit)
    assert fast_overlay.size == naive_overlay.size
    diff = np.abs(np.asarray(fast_overlay, np.int16) - np.asarray(naive_overlay, np.int16))
    assert diff.max() <= 2  # the same map up to float rounding


def test_synthetic_images_decode():
    from core.decode import decode_bytes

    bench = load_script("inference")
    images, source = bench.load_images(3, synthetic=True)
    assert "synthetic" in source and len({data for _, data in images}) == 3
    for name, data in images:
        assert decode_bytes(data, name).pixels.shape == (bench.SYNTHETIC_SIDE, bench.SYNTHETIC_SIDE)


def test_time_interleaved_rotates_order_and_drops_warmup():
    bench = load_script("inference")
    calls = []
    times = bench.time_interleaved({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))}, 3, 1)
    assert [len(v) for v in times.values()] == [3, 3]
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("b", 3), ("a", 3)]


def test_history_fill_matches_what_the_store_reads(tmp_path):
    from dashboard.store import HistoryFilter, export_csv, make_engine, query_history

    bench = load_script("history")
    engine = make_engine(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    added, _ = bench.fill(engine, 400, now=datetime.now(UTC), seed=1)
    assert added == 400
    assert bench.fill(engine, 400, now=datetime.now(UTC), seed=1)[0] == 0  # topped up only

    page, total = query_history(engine, HistoryFilter(), 1, 50)
    assert total == 400 and len(page) == 50
    assert page["created_at"].is_monotonic_decreasing and page["id"].is_monotonic_decreasing
    reviewed = query_history(engine, HistoryFilter(reviewed=True), 1)[1]
    assert 0.1 * 400 < reviewed < 0.3 * 400
    versions = {v for v, *_ in bench.MODEL_VERSIONS}
    assert sum(query_history(engine, HistoryFilter(model_version=v), 1)[1] for v in versions) == 400
    assert export_csv(engine, HistoryFilter()).count(b"\n") == 401  # header + one line per study
    engine.dispose()


def test_pipeline_synthetic_records_load(tmp_path):
    from training.pipeline import load_gray

    bench = load_script("pipeline")
    records = bench.synthetic_records(4, tmp_path)
    assert [r.label for r in records] == [0, 1, 0, 1]
    assert load_gray(records[0].image_path, 32).shape == (32, 32, 1)


def test_pipeline_knee_subset_is_balanced():
    require_knee()
    bench = load_script("pipeline")
    records = bench.knee_records(16)
    assert len(records) == 16 and sum(r.label for r in records) == 8
    assert {r.split for r in records} == {"train"}
