"""Process-wide resources, loaded once and shared by every browser session."""

from __future__ import annotations

import streamlit as st

from core.bundle import read_card
from dashboard.settings import Settings, load_settings


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return load_settings()


@st.cache_resource(show_spinner="Loading the model…")
def predictor():
    """The bundle's predictor, verified and warmed once per process."""
    from core.inference import Predictor

    return Predictor.from_bundle_dir(settings().bundle_dir)


@st.cache_resource(show_spinner=False)
def engine():
    from dashboard.store import make_engine

    return make_engine(settings().database_url)


@st.cache_resource(show_spinner=False)
def salt() -> bytes:
    from dashboard.store import load_salt

    return load_salt(settings())


@st.cache_data(show_spinner=False)
def card() -> dict:
    """The model card alone (no TensorFlow), for pages that only show it."""
    return read_card(settings().bundle_dir) if settings().bundle_dir else _default_card()


def _default_card() -> dict:
    from core.bundle import DEFAULT_BUNDLE_DIR

    return read_card(DEFAULT_BUNDLE_DIR)
