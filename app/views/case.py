"""A case as a slice stack (a volume or a patient): the stack with its slider (left), the
slice's and the volume's metrics with the downloads (right), the clickable area chart."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import streamlit as st

from app import backend, overlay, stack
from app.units import Spacing
from app.views import downloads
from app.views.layers import LAYER_UNCERTAINTY, Display, stack_layers, stack_legend
from app.views.panels import (
    CHART_PICK,
    area_chart,
    show_stack_metrics,
    show_volume_metrics,
    slice_scores,
)
from app.views.predictions import memo
from data import naming

STACK_HEIGHT = 470  # canvas height (CSS px): with the slider, above the fold of 1440 x 900


@dataclass(frozen=True)
class StackCase:
    """A stack ready to show: slices, their predictions, optional truths and the grid."""

    title: str
    names: list[str]
    images: list[np.ndarray]
    predictions: list[backend.Segmentation]
    truths: list[np.ndarray] | None
    start: int
    start_reason: str
    spacing: Spacing | None = None
    affine: np.ndarray | None = None
    header: nib.Nifti1Header | None = None

    def truth(self, index: int) -> np.ndarray | None:
        return self.truths[index] if self.truths is not None else None


StackId = tuple[str, str, str]
"""(model, stack key, content id): what the memoised pictures and maps of a stack depend on."""


def _uncertainty(segmenter: backend.Segmenter, case: StackCase, ident: StackId
                 ) -> list[np.ndarray]:
    def make() -> list[np.ndarray]:
        with st.spinner("Segmenting the mirrored slices (uncertainty)...", show_time=True):
            return segmenter.uncertainty(case.images, [p.mask for p in case.predictions])

    maps: list[np.ndarray] = memo("_uncertainty", ident, make, keep=2)
    return maps


def _chosen_slice(key: str, count: int, start: int) -> tuple[int, str]:
    """The slice to show (0-based) and the nonce that moves the browser's stack.

    Three inputs move it: the slice slider, a click on the area chart (both handled here before
    the stack is drawn) and the stack itself (handled after, from its report).
    """
    state = st.session_state
    slider_key, nonce_key, seen_key = f"slice-{key}", f"_nonce-{key}", f"_seen-{key}"
    seen = state.setdefault(seen_key, {"slider": start + 1, "chart": None})
    if slider_key not in state:
        state[slider_key] = start + 1
    nonce = int(state.setdefault(nonce_key, 0))
    chart = state.get(f"chart-{key}")
    picked = None
    if chart is not None:
        points = chart.get("selection", {}).get(CHART_PICK) or []
        picked = int(points[0]["slice"]) if points and "slice" in points[0] else None
    if picked is not None and picked != seen["chart"] and 1 <= picked <= count:
        state[slider_key] = picked
        nonce += 1
    seen["chart"] = picked
    if state[slider_key] != seen["slider"]:  # the slider (or the chart) moved it
        nonce += 1
    state[nonce_key] = nonce
    return int(state[slider_key]) - 1, str(nonce)


def forget_stack(key: str) -> None:
    """Drop the stack ``key``'s position, so that the next case starts afresh."""
    for name in (f"slice-{key}", f"_seen-{key}", f"_nonce-{key}", f"_seq-{key}"):
        st.session_state.pop(name, None)


def _draw_stack(case: StackCase, display: Display, uncertain: list[np.ndarray] | None,
                goto: tuple[int, str], *, key: str, ident: StackId) -> int:
    """The stack and its slider; returns the slice on screen (0-based).

    The images and overlays are encoded once per stack and display choice (every scroll in
    the browser reruns the page: 23 overlays take about 135 ms to encode)."""
    count = len(case.names)
    index = goto[0]
    bases = memo("_bases", (ident, display.channel), lambda: [
        stack.png_data_url(overlay.display_image(im, display.channel)) for im in case.images],
        keep=4)

    def draw_overlays() -> list[str]:
        return [stack.png_data_url(overlay.layers_rgba(
                    case.images[k].shape[:2],
                    stack_layers(case.predictions[k].mask, case.truth(k), display,
                                 uncertain[k] if uncertain is not None else None),
                    display.opacity))
                for k in range(count)]  # fmt: skip

    overlays = memo("_overlays", (ident, display.mode, display.opacity, display.layers),
                    draw_overlays, keep=4)
    aspect = case.spacing[0] / case.spacing[1] if case.spacing else 1.0
    report = stack.slice_stack(bases, overlays, goto=goto,
                               key=f"stack-{key}", aspect=aspect, height=STACK_HEIGHT)
    seen_seq = st.session_state.setdefault(f"_seq-{key}", 0)
    if report is not None and int(report.get("seq", 0)) != seen_seq:
        st.session_state[f"_seq-{key}"] = int(report.get("seq", 0))
        index = max(0, min(count - 1, int(report.get("slice", index))))
        st.session_state[f"slice-{key}"] = index + 1
    st.session_state[f"_seen-{key}"]["slider"] = index + 1
    if count > 1:
        st.slider("Slice", 1, count, key=f"slice-{key}",
                  help=f"Starts at the slice with the {case.start_reason}. Scroll the image "
                  "with the mouse wheel or the arrow keys.")
    else:  # a slider needs two positions at least
        st.caption("Only one slice.")
    return index


def show_stack(
    segmenter: backend.Segmenter, case: StackCase, display: Display, *, key: str,
    content_id: str = "",
) -> None:
    """A volume or a patient: the slice stack (image left, metrics right), the clickable
    per-slice area chart and the downloads.

    ``content_id`` tells apart the cases shown under one ``key`` (the uploaded volumes); the
    stack's memoised pictures and uncertainty maps are kept by model, key and content id."""
    count = len(case.names)
    index, nonce = _chosen_slice(key, count, case.start)
    ident: StackId = (segmenter.key, key, content_id)
    uncertain = (_uncertainty(segmenter, case, ident)
                 if LAYER_UNCERTAINTY in display.layers else None)
    left, right = st.columns([3, 2], gap="medium")
    with left:
        index = _draw_stack(case, display, uncertain, (index, f"{content_id}:{nonce}"),
                            key=key, ident=ident)
    masks = np.stack([p.mask for p in case.predictions], axis=2)
    truth_volume = np.stack(case.truths, axis=2) if case.truths is not None else None
    rows = [slice_scores(case.names[k], case.predictions[k], case.truth(k))
            for k in range(count)]
    with right:
        st.markdown(f"**{case.title}** · slice {index + 1} of {count} · `{case.names[index]}`")
        stack_legend(display, case.truths is not None)
        show_stack_metrics(rows[index], case.predictions[index], case.spacing)
        st.divider()
        show_volume_metrics(masks, truth_volume, case.spacing, key)
        a, b = st.columns(2)
        with a:
            downloads.mask_volume(case.title, masks, case.affine, case.header, key=key)
        with b:
            downloads.metrics_csv("Per-slice metrics (CSV)", rows,
                                  f"{naming.stem(case.title)}_metrics.csv", key=f"csv-{key}")
    area_chart(rows, index, key=key, spacing=case.spacing)
