"""The "Browse a dataset folder" page: the patients of the operator's ``LGGSEG_DATA_DIR``
(kaggle_3m layout), one at a time as a slice stack, and the table of all of them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import backend, card
from app.settings import ViewerSettings
from app.views.case import StackCase, show_stack
from app.views.layers import Display
from app.views.predictions import all_segmented, predict
from app.views.resources import scan, truth_areas
from data import kaggle3m

logger = logging.getLogger("app.viewer")

MODE = "Browse a dataset folder"


def _patient_scores() -> dict[str, dict[str, Any]]:
    """Volumetric scores of the patients segmented in this session, by patient id."""
    scores: dict[str, dict[str, Any]] = st.session_state.setdefault("_patient_scores", {})
    return scores


def _read_patient(patient: kaggle3m.PatientRecord) -> tuple[list[np.ndarray], list[np.ndarray],
                                                            list[bytes]]:
    images = [kaggle3m.read_image(s.image_path) for s in patient.slices]
    truths = [kaggle3m.read_mask(s.mask_path) for s in patient.slices]
    files = [s.image_path.read_bytes() for s in patient.slices]
    return images, truths, files


def _segment_patient(segmenter: backend.Segmenter, patient_id: str, images: list[np.ndarray],
                     truths: list[np.ndarray], files: list[bytes]) -> list[backend.Segmentation]:
    """The patient's predictions (this session's when it has them); records its scores."""
    predictions = predict(segmenter, list(zip(files, images, strict=True)),
                          f"patient {patient_id}")
    masks = np.stack([p.mask for p in predictions], axis=2)
    summary = backend.score(masks, np.stack(truths, axis=2))
    _patient_scores()[patient_id] = {"dice": summary.dice, "predicted": summary.predicted_pixels}
    return predictions


def patient_table(patients: Sequence[kaggle3m.PatientRecord], root: Path,
                  model_card: dict[str, Any]) -> pd.DataFrame:
    """One row per patient, worst volumetric Dice first (patients not segmented yet last)."""
    scores = _patient_scores()
    rows = []
    for p in patients:
        known = scores.get(p.patient_id, {})
        part = card.split_of(model_card, p.patient_id)
        rows.append({
            "patient": p.patient_id,
            "volumetric Dice": known.get("dice"),
            "tumour volume (voxels)": int(truth_areas(str(root), p.patient_id).sum()),
            "predicted volume (voxels)": known.get("predicted"),
            "slices": len(p.slices),
            "model split": card.SPLIT_NAMES[part] if part else "not used",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    return table.sort_values("volumetric Dice", na_position="last", kind="stable",
                             ignore_index=True)


def _open_selected_row() -> None:
    """The table's row click: open that patient (a callback, before the page is drawn)."""
    event = st.session_state.get("patients_table")
    ids = st.session_state.get("_table_ids", [])
    rows = event.get("selection", {}).get("rows", []) if event is not None else []
    if rows and rows[0] < len(ids):
        st.session_state["patient"] = ids[rows[0]]


def page_dataset(segmenter: backend.Segmenter, root: Path | None, display: Display) -> None:
    """Patients found under the operator's ``LGGSEG_DATA_DIR``, picked from a list or the table:
    no path is ever typed, and messages never name anything but the folder's patients."""
    if root is None:
        st.info("No dataset folder is configured for this viewer. To browse a kaggle_3m folder "
                "patient by patient, the operator sets LGGSEG_DATA_DIR before starting it.")
        return
    try:
        patients = scan(str(root))
    except kaggle3m.DatasetError as exc:
        logger.warning("cannot browse LGGSEG_DATA_DIR: %s", exc)
        st.error("The dataset folder configured for this viewer cannot be browsed. The reason "
                 "is in the viewer's log; the operator sets the folder with LGGSEG_DATA_DIR.")
        return
    by_id = {p.patient_id: p for p in patients}
    model_card = segmenter.card()

    def label(pid: str) -> str:
        part = card.split_of(model_card, pid)
        used = f", {card.SPLIT_NAMES[part]} patient of this model" if part else ""
        return f"{pid} ({len(by_id[pid].slices)} slices{used})"

    with st.sidebar:
        patient_id = st.selectbox("Patient", list(by_id), key="patient", format_func=label)
    patient = by_id[patient_id]
    part = card.split_of(model_card, patient_id)
    if part in ("train", "val"):
        st.caption(f"⚠ This patient was in the model's {card.SPLIT_NAMES[part]} set: its "
                   "scores overstate how well the model does on new patients.")
    # Everything about the patient is drawn in ``body``, a container keyed by the patient: the
    # next patient's container replaces it at once, so while that patient is segmented only
    # its notice shows, never the previous patient's metrics.
    body = st.container(key=f"body-{patient_id}")
    try:
        areas = truth_areas(str(root), patient_id)
        images, truths, files = _read_patient(patient)
    except (kaggle3m.DatasetError, OSError) as exc:
        logger.warning("cannot read patient %s: %s", patient_id, exc)
        body.error(f"Cannot read the files of patient {patient_id}; the reason is in the "
                   "viewer's log.")
        return
    names = [s.image_path.name for s in patient.slices]
    with body:
        try:
            notice = st.empty()  # always there, so the stack keeps its place (and its state)
            with notice.container():
                if not all_segmented(segmenter, files):
                    st.info(f"Segmenting patient {patient_id} ({len(files)} slices)...")
                predictions = _segment_patient(segmenter, patient_id, images, truths, files)
            notice.empty()
            case = StackCase(patient_id, names, images, predictions, truths,
                             int(np.argmax(areas)), "largest ground-truth tumour")
            show_stack(segmenter, case, display, key=f"patient-{patient_id}")
        except backend.BackendError as exc:
            st.error(str(exc))
            return
    show_patient_table(segmenter, patients, root, model_card)


def show_patient_table(segmenter: backend.Segmenter, patients: Sequence[kaggle3m.PatientRecord],
                       root: Path, model_card: dict[str, Any]) -> None:
    head, button = st.columns([4, 1], vertical_alignment="bottom")
    head.subheader("Patients, worst volumetric Dice first")
    if button.button("Segment every patient", key="score_all",
                     help="Fills the Dice column for the whole folder (takes a while on a CPU)."):
        progress = st.progress(0.0, text="Segmenting every patient...")
        for done, p in enumerate(patients, start=1):
            if p.patient_id not in _patient_scores():
                _segment_patient(segmenter, p.patient_id, *_read_patient(p))
            progress.progress(done / len(patients),
                              text=f"Segmented {done} of {len(patients)} patients")
        progress.empty()
    table = patient_table(patients, root, model_card)
    st.session_state["_table_ids"] = list(table["patient"])
    st.caption("Click a row to open that patient; click a column header to sort. Dice is shown "
               "for the patients segmented in this session.")
    st.dataframe(table, hide_index=True, width="stretch", height=280, key="patients_table",
                 on_select=_open_selected_row, selection_mode="single-row",
                 column_config={"volumetric Dice": st.column_config.NumberColumn(format="%.3f")})


def example_patient(settings: ViewerSettings, segmenter: backend.Segmenter) -> None:
    """The first screen's offer when a data folder is set: open one of its patients."""
    if settings.data_dir is None:
        return
    try:
        patients = scan(str(settings.data_dir))
    except kaggle3m.DatasetError:
        return
    if not patients:
        return
    model_card = segmenter.card()
    example = next((p.patient_id for p in patients
                    if card.split_of(model_card, p.patient_id) == "test"),
                   patients[0].patient_id)

    def open_example() -> None:
        st.session_state["mode"] = MODE
        st.session_state["patient"] = example

    st.button("Try an example patient", key="example", type="primary", on_click=open_example,
              help=f"Opens patient {example} of the configured dataset folder.")
