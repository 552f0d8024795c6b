"""The "Upload slices" page: 2-D slices (and their masks), one chosen slice shown at a time."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import backend, overlay, uploads
from app.settings import ViewerSettings
from app.views import downloads
from app.views.dataset import example_patient
from app.views.inputs import LOSSY_WARNING, show_errors, uploaded
from app.views.layers import Display, legend, prediction_legend
from app.views.panels import show_metrics, slice_scores
from app.views.predictions import predict

MODE = "Upload slices"
VIEW_OVERLAY = "Overlay"
VIEW_AGREEMENT = "Agreement (TP / FP / FN)"
VIEW_SIDE = "Side by side"


def page_slices(segmenter: backend.Segmenter, display: Display, settings: ViewerSettings) -> None:
    st.markdown("Upload one or more MRI slices (TIFF, PNG or JPEG). Add a slice's ground-truth "
                "mask under the same name ending in `_mask` (e.g. `case_12.tif` and "
                "`case_12_mask.tif`) to compare, either here or in the second box.")
    a, b = st.columns(2)
    images = a.file_uploader("MRI slices (and their _mask files)", accept_multiple_files=True,
                             key="slices")
    masks = b.file_uploader("Ground-truth masks (optional)", accept_multiple_files=True,
                            key="masks")
    slices, problems = uploads.read_slices(uploaded(images), uploaded(masks))
    show_errors(problems)
    if not slices:
        if not problems:
            example_patient(settings, segmenter)
        return
    jpegs = [s.name for s in slices if s.lossy]
    if jpegs:
        listed = ", ".join(f"`{n}`" for n in jpegs[:3]) + (
            f" and {len(jpegs) - 3} more" if len(jpegs) > 3 else "")
        st.warning(f"{listed} {'is a JPEG' if len(jpegs) == 1 else 'are JPEGs'}. "
                   + LOSSY_WARNING)
    try:
        predictions = predict(segmenter, [(s.data, s.image) for s in slices],
                              f"{len(slices)} slice(s)")
    except backend.BackendError as exc:
        st.error(str(exc))
        return
    rows = [slice_scores(s.name, p, s.truth) for s, p in zip(slices, predictions, strict=True)]
    if len(slices) > 1:
        st.subheader("All uploaded slices")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        index = st.selectbox("Slice to view", range(len(slices)),
                             format_func=lambda i: slices[i].name)
    else:
        index = 0
    chosen = slices[index]
    st.subheader(chosen.name)
    show_slice(chosen, predictions[index], display, rows[index], key=f"upload-{index}")
    downloads.metrics_csv("Download the metrics (CSV)", rows, "lggseg_slice_metrics.csv",
                          key="csv-slices")


def show_slice(
    chosen: uploads.SliceInput,
    prediction: backend.Segmentation,
    display: Display,
    row: dict[str, Any],
    *,
    key: str,
) -> None:
    """The selected slice: the chosen view on the left, its metrics and downloads on the right."""
    name, truth = chosen.name, chosen.truth
    base = overlay.display_image(chosen.image, display.channel)
    pred = prediction.mask
    views = [VIEW_OVERLAY, VIEW_AGREEMENT, VIEW_SIDE] if truth is not None else [
        VIEW_OVERLAY, VIEW_SIDE]
    view = st.radio("View", views, horizontal=True, key="view")
    if view == VIEW_SIDE:
        prediction_legend(truth is not None)
        cols = st.columns(3)
        cols[0].image(base, caption="Image", width="stretch")
        cols[1].image(overlay.mask_overlay(base, pred, overlay.PREDICTION, mode=display.mode,
                                           opacity=display.opacity),
                      caption="Prediction", width="stretch")
        if truth is not None:
            cols[2].image(overlay.mask_overlay(base, truth, overlay.GROUND_TRUTH,
                                               mode=display.mode, opacity=display.opacity),
                          caption="Ground truth", width="stretch")
        else:
            cols[2].info("No ground-truth mask uploaded for this slice.")
        show_metrics(row, wide=True)
        downloads.mask_png(name, pred, key=key)
        return
    left, right = st.columns([3, 2], gap="large")
    with left:
        if view == VIEW_AGREEMENT and truth is not None:
            legend([(overlay.TRUE_POSITIVE, "true positive (both)"),
                    (overlay.FALSE_POSITIVE, "false positive (prediction only)"),
                    (overlay.FALSE_NEGATIVE, "false negative (missed ground truth)")])
            st.image(overlay.agreement_overlay(base, pred, truth, mode=display.mode,
                                               opacity=display.opacity),
                     caption=f"{name}: agreement of prediction and ground truth",
                     width="stretch")
        else:
            prediction_legend(truth is not None)
            st.image(overlay.prediction_and_truth(base, pred, truth, mode=display.mode,
                                                  opacity=display.opacity),
                     caption=f"{name}: prediction" + (" and ground truth" if truth is not None
                                                      else ""),
                     width="stretch")
    with right:
        show_metrics(row)
        downloads.mask_png(name, pred, key=key)
