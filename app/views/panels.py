"""Metrics panels (a slice, a stack's slice, a whole volume) and the per-slice area chart."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app import backend, overlay
from app.units import Spacing, area_label, volume_label
from app.views.predictions import memo
from inference import metrics

CHART_PICK = "pick"
Metric = tuple[str, str, str | None]  # (label, value, help) of one st.metric


def slice_scores(
    name: str, prediction: backend.Segmentation, truth: np.ndarray | None
) -> dict[str, Any]:
    scores = backend.score(prediction.mask, truth)
    row: dict[str, Any] = {"slice": name}
    row.update(scores.as_row())
    row["max_probability"] = round(prediction.max_probability, 4)
    return row


def show_metrics(row: dict[str, Any], *, wide: bool = False) -> None:
    """The slice's metrics: a 2-column block (beside the image) or one row of 5 (``wide``)."""
    cells = iter(st.columns(5) if wide else [c for _ in range(3) for c in st.columns(2)])
    if row.get("dice") is not None:
        next(cells).metric("Dice", f"{row['dice']:.3f}",
                           help="Overlap of prediction and ground truth: 2|P∩G| / (|P|+|G|); "
                           "1 is perfect. Both empty counts as 1.")
        next(cells).metric("IoU", f"{row['iou']:.3f}", help="|P∩G| / |P∪G|")
    with next(cells):
        st.metric("Predicted tumour area", f"{row['predicted_pixels']:,} px",
                  help="Pixels the model labels as tumour on this slice.")
        st.caption(f"{row['predicted_percent']:.2f} % of the slice")
    if row.get("truth_pixels") is not None:
        with next(cells):
            st.metric("Ground-truth tumour area", f"{row['truth_pixels']:,} px")
            st.caption(f"{row['truth_percent']:.2f} % of the slice")
    next(cells).metric("Max probability", f"{row['max_probability']:.2f}",
                       help="The model's highest per-pixel tumour probability on this slice.")
    if row.get("dice") is None:
        st.info("Add the ground-truth mask (same name ending in _mask) to see Dice and IoU.")
    elif row["truth_pixels"] == 0 and row["predicted_pixels"] == 0:
        st.caption("No tumour in either mask: a correct negative, counted as Dice 1.")


def metric_grid(items: Sequence[Metric], per_row: int = 3) -> None:
    """Metrics in rows of ``per_row``, left to right, with no gaps for the missing ones."""
    for start in range(0, len(items), per_row):
        for col, (label, value, help_text) in zip(st.columns(per_row),
                                                  items[start : start + per_row], strict=False):
            col.metric(label, value, help=help_text)


def show_stack_metrics(
    row: dict[str, Any], current: backend.Segmentation, spacing: Spacing | None
) -> None:
    """The metrics of the stack's slice on screen."""
    items: list[Metric] = []
    if row.get("dice") is not None:
        items += [("Dice", f"{row['dice']:.3f}", "Overlap of prediction and ground truth on "
                   "this slice: 2|P∩G| / (|P|+|G|); both empty counts as 1."),
                  ("IoU", f"{row['iou']:.3f}", "|P∩G| / |P∪G|")]
    items.append(("Max probability", f"{current.max_probability:.2f}",
                  "The model's highest per-pixel tumour probability on this slice."))
    metric_grid(items)
    areas: list[Metric] = [("Predicted tumour area",
                            area_label(row["predicted_pixels"], spacing), None)]
    if row.get("truth_pixels") is not None:
        areas.append(("Ground-truth tumour area", area_label(row["truth_pixels"], spacing), None))
    metric_grid(areas, per_row=2)
    if spacing is None:
        st.caption("Areas in pixels: these files carry no pixel spacing.")


def show_volume_metrics(
    masks: np.ndarray, truth: np.ndarray | None, spacing: Spacing | None, key: str
) -> None:
    """The metrics of the whole stack (``masks`` and ``truth`` are H x W x slices)."""
    summary = backend.score(masks, truth)
    items: list[Metric] = []
    if summary.dice is not None:
        items.append(("Volumetric Dice", f"{summary.dice:.3f}",
                      "Dice over all slices together (every tumour voxel counts once)."))
    if truth is not None:
        inputs = (key, hashlib.sha256(masks.tobytes()).hexdigest(),
                  hashlib.sha256(truth.tobytes()).hexdigest(), spacing)  # all it depends on
        distance = memo("_hd95", inputs, lambda: metrics.hd95(masks, truth, spacing), keep=4)
        unit = "mm" if spacing is not None else "px"
        items.append((
            f"HD95 ({unit})", "-" if np.isnan(distance) else f"{distance:.1f} {unit}",
            "95th-percentile distance between the predicted and the ground-truth tumour "
            "surfaces over the whole volume" + ("" if spacing is not None else
                                                ", in pixels: no voxel spacing known")
            + "; - when either is empty."))
    items.append(("Slices", f"{masks.shape[2]}", None))
    metric_grid(items)
    volumes: list[Metric] = [("Predicted tumour volume",
                              volume_label(summary.predicted_pixels, spacing), None)]
    if summary.truth_pixels is not None:
        volumes.append(("Ground-truth tumour volume",
                        volume_label(summary.truth_pixels, spacing), None))
    metric_grid(volumes, per_row=2)


def area_chart(rows: Sequence[dict[str, Any]], current: int, *, key: str,
               spacing: Spacing | None) -> None:
    """Tumour area per slice; clicking a point shows that slice."""
    factor = 1.0 if spacing is None else spacing[0] * spacing[1]
    unit = "pixels" if spacing is None else "mm²"
    records = []
    for number, row in enumerate(rows, start=1):
        records.append({"slice": number, "mask": "prediction",
                        "area": round(row["predicted_pixels"] * factor, 1)})
        if row.get("truth_pixels") is not None:
            records.append({"slice": number, "mask": "ground truth",
                            "area": round(row["truth_pixels"] * factor, 1)})
    data = pd.DataFrame(records)
    colour = alt.Color(
        "mask:N",
        title=None,
        scale=alt.Scale(domain=["prediction", "ground truth"],
                        range=[overlay.hex_colour(overlay.PREDICTION),
                               overlay.hex_colour(overlay.GROUND_TRUTH)]),
        legend=alt.Legend(orient="top"),
    )
    pick = alt.selection_point(name=CHART_PICK, fields=["slice"], on="click", nearest=True)
    base = alt.Chart(data).encode(
        x=alt.X("slice:Q", title="slice (click to show it)"),
        y=alt.Y("area:Q", title=f"tumour area ({unit})"),
        color=colour,
        tooltip=["slice", "mask", "area"],
    )
    lines = base.mark_line()
    points = base.mark_point(filled=True, size=50).add_params(pick)
    rule = alt.Chart(pd.DataFrame({"slice": [current + 1]})).mark_rule(
        color="grey", strokeDash=[4, 3]).encode(x="slice:Q")
    st.altair_chart((lines + points + rule).properties(title="Tumour area per slice"),
                    height=280, width="stretch", on_select="rerun", selection_mode=CHART_PICK,
                    key=f"chart-{key}")
