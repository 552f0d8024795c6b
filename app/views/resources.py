"""What the viewer loads once and shares across sessions: the model, the API client, the
dataset folder's patient list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from app import backend
from app.client import ApiClient
from app.settings import ViewerSettings
from data import kaggle3m


@st.cache_resource(show_spinner="Loading the model...")
def load_local(checkpoint: str, device: str, engine: str = "auto") -> backend.LocalSegmenter:
    return backend.LocalSegmenter.load(Path(checkpoint), device, engine)


@st.cache_resource(show_spinner="Connecting to the API...", ttl=300)
def connect_api(url: str, timeout_s: float, api_key: str | None) -> backend.ApiSegmenter:
    return backend.ApiSegmenter(ApiClient(url, timeout_s=timeout_s, api_key=api_key))


def segmenter_for(settings: ViewerSettings) -> backend.Segmenter:
    """The configured API (the key goes to that address only), else the model in-process."""
    if settings.api_url:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return connect_api(settings.api_url, settings.api_timeout_s, key)
    return load_local(str(settings.checkpoint), settings.device, settings.engine)


@st.cache_data(show_spinner="Scanning the dataset folder...", max_entries=4)
def scan(root: str) -> list[kaggle3m.PatientRecord]:
    return kaggle3m.scan_dataset(root, skip_bad=True)


@st.cache_data(show_spinner=False, max_entries=64)
def truth_areas(root: str, patient_id: str) -> np.ndarray:
    patient = next(p for p in scan(root) if p.patient_id == patient_id)
    return kaggle3m.tumour_pixels(patient)
