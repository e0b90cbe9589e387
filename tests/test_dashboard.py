"""AppTest per page: upload real images, compare with core.predict, log, History, reopen, Model."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.bundle import read_card
from tests.conftest import ROOT, png_bytes, synthetic_radiograph

APP = str(ROOT / "dashboard" / "app.py")
TIMEOUT = 180  # TensorFlow start-up is far beyond AppTest's 3 s default


@pytest.fixture()
def app_env(evaluated_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("BONESENTINEL_BUNDLE", str(evaluated_bundle))
    monkeypatch.setenv("BONESENTINEL_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("BONESENTINEL_DATABASE_URL", raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()
    st.cache_data.clear()


def upload_study(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    next(b for b in at.button if b.label == "Analyze study").click()
    return at.run()


def metric(at: AppTest, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def test_analyze_scores_match_cli_and_study_is_logged(app_env, evaluated_bundle, knee_files, dicom_dir):
    from core.predict import run as predict_run
    from dashboard.store import HistoryFilter, get_study, make_engine, query_history

    paths = [knee_files[0], knee_files[-1], dicom_dir / "RG3_UNCR.dcm"]
    files = [(p.name, p.read_bytes()) for p in paths] + [("notes.png", b"not an image")]
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    at = upload_study(at, files)
    assert not at.exception, at.exception

    document, status = predict_run(["--bundle", str(evaluated_bundle), *map(str, paths)])
    assert status == 0
    shown = [m.value for m in at.metric if m.label == "Probability abnormal"]
    expected = [f"{img['probability']:.3f}" for img in document["images"]]
    assert shown == expected
    assert metric(at, "Study score") == f"{document['study']['probability']:.3f}"
    assert any("notes.png" in w.value and "not a PNG" in w.value for w in at.warning)

    engine = make_engine(f"sqlite:///{app_env / 'var' / 'bonesentinel.sqlite3'}")
    frame, total = query_history(engine, HistoryFilter(), page=1)
    assert total == 1
    study = get_study(engine, int(frame["id"][0]))
    assert study.n_images == 4 and study.n_scored == 3 and study.n_rejected == 1
    assert study.probability == pytest.approx(document["study"]["probability"], abs=1e-6)
    assert study.images[0].overlay_png and study.images[0].thumbnail_png


def test_history_lists_and_study_reopens_and_reviews(app_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at = upload_study(
        at, [("a.png", png_bytes(synthetic_radiograph(seed=3))), ("b.png", png_bytes(synthetic_radiograph(seed=4)))]
    )
    assert not at.exception
    score = metric(at, "Study score")

    at.switch_page("views/history.py").run()
    assert not at.exception
    assert metric(at, "Studies") == "1"
    table = at.dataframe[0].value
    assert list(table["id"]) == [1] and f"{table['probability'][0]:.3f}" == score

    at.query_params["id"] = "1"
    at.switch_page("views/study.py").run()
    assert not at.exception
    assert metric(at, "Study score") == score
    assert metric(at, "Images scored") == "2 of 2"
    reviewer = next(t for t in at.text_input if t.label == "Reviewer")
    reviewer.input("AB")
    next(s for s in at.selectbox if s.label == "True label").select("abnormal")
    next(b for b in at.button if b.label == "Save review").click()
    at.run()
    assert not at.exception
    assert any("**AB**" in m.value for m in at.markdown)

    at.switch_page("views/history.py").run()
    assert metric(at, "Reviewed") == "1"


def test_model_page_reflects_card(app_env, evaluated_bundle):
    card = read_card(evaluated_bundle)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("views/model.py").run()
    assert not at.exception
    level = card["validation"]["image_level"]
    assert metric(at, "AUROC") == f"{level['auroc']:.3f}"
    assert metric(at, "Sensitivity") == f"{level['at_threshold']['sensitivity']:.3f}"
    assert any(card["training_data"]["name"] in m.value for m in at.markdown)
    assert any("not a medical device" in w.value.lower() or "tests only" in w.value for w in at.warning)


def test_model_page_shows_the_shipped_gate_as_measured(tmp_path, monkeypatch):
    from core.bundle import DEFAULT_BUNDLE_DIR

    if not (DEFAULT_BUNDLE_DIR / "card.json").is_file():
        pytest.skip(f"no bundled model at {DEFAULT_BUNDLE_DIR}")
    monkeypatch.delenv("BONESENTINEL_BUNDLE", raising=False)
    monkeypatch.setenv("BONESENTINEL_DATA_DIR", str(tmp_path / "var"))
    st.cache_resource.clear()
    measured = read_card(DEFAULT_BUNDLE_DIR)["gate"]["measured"]
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("views/model.py").run()
    assert not at.exception
    assert metric(at, "Validation radiographs passed") == f"{measured['val_ok_rate']:.1%}"
    assert metric(at, "Non-radiographs rejected") == f"{measured['non_radiograph_reject_rate']:.1%}"
    assert any("cross-validated" in m.value or "without any image of its source" in m.value for m in at.markdown)
    st.cache_resource.clear()
