"""The sidebar's display choices and the model card."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import card, overlay
from app.views.layers import (
    LAYER_AGREEMENT,
    LAYER_PREDICTION,
    LAYER_TRUTH,
    LAYER_UNCERTAINTY,
    Display,
)

CHANNELS: dict[str, overlay.Channel] = {
    "FLAIR": "flair", "Pre-contrast": "pre", "Post-contrast": "post",
    "All three sequences (RGB)": "composite",
}  # fmt: skip


def sidebar() -> Display:
    """Display choices only: where the model runs and which data may be browsed are the
    operator's settings (``LGGSEG_API_URL``, ``LGGSEG_DATA_DIR``), never page inputs."""
    with st.sidebar:
        st.subheader("Layers")
        shown = {
            LAYER_AGREEMENT: st.checkbox(LAYER_AGREEMENT, True, key="layer_agreement",
                                        help="Filled: yellow where prediction and ground truth "
                                        "agree, vermillion prediction only, blue missed."),
            LAYER_PREDICTION: st.checkbox(LAYER_PREDICTION, False, key="layer_prediction",
                                         help="The predicted mask's outline (orange)."),
            LAYER_TRUTH: st.checkbox(LAYER_TRUTH, False, key="layer_truth",
                                    help="The expert mask's outline (sky blue)."),
            LAYER_UNCERTAINTY: st.checkbox(
                LAYER_UNCERTAINTY, False, key="layer_uncertainty",
                help="Purple where the model's answer for the left-right mirrored slice differs: "
                "one more pass of the model over every slice."),
        }
        st.subheader("Display")
        channel = st.selectbox("Sequence shown", list(CHANNELS), index=0, key="channel",
                               help="Drag on the image to change its window/level.")
        mode = st.radio("Agreement drawn as", ["Filled", "Contour"], index=0, horizontal=True,
                        key="mask_mode")
        opacity = st.slider("Mask opacity", 0.0, 1.0, 0.5 if mode == "Filled" else 1.0, 0.05)
    return Display(
        channel=CHANNELS[channel],
        mode="fill" if mode == "Filled" else "contour",
        opacity=float(opacity),
        layers=frozenset(name for name, on in shown.items() if on),
    )


def model_card_summary(model_card: dict[str, Any]) -> None:
    with st.expander("Model card (what this model is, how it was trained and tested)"):
        lines = card.summary(model_card)
        st.markdown("\n".join(lines) if lines else "The model card is empty.")
        st.caption("Full card:")
        st.json(model_card, expanded=False)
