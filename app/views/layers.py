"""What is drawn over the image (agreement, outlines, uncertainty) and the legend saying so."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import streamlit as st

from app import overlay

LAYER_PREDICTION = "Prediction"
LAYER_TRUTH = "Ground truth"
LAYER_AGREEMENT = "Agreement"
LAYER_UNCERTAINTY = "Uncertainty"

Layer = tuple[np.ndarray, overlay.RGB, overlay.Mode]


@dataclass(frozen=True)
class Display:
    channel: overlay.Channel
    mode: overlay.Mode
    opacity: float
    layers: frozenset[str] = frozenset({LAYER_AGREEMENT})


def legend(items: Sequence[tuple[overlay.RGB, str]]) -> None:
    """Colour swatches with labels (static HTML built from constants only, no user text)."""
    swatches = "".join(
        f"<span style='display:inline-block;margin-right:1.2em'>"
        f"<span style='display:inline-block;width:0.9em;height:0.9em;border-radius:2px;"
        f"vertical-align:middle;background:{overlay.hex_colour(colour)}'></span> {label}</span>"
        for colour, label in items
    )
    st.markdown(swatches, unsafe_allow_html=True)


def prediction_legend(has_truth: bool) -> None:
    """The legend of a prediction, and of its ground truth when there is one."""
    legend([(overlay.PREDICTION, "prediction")]
           + ([(overlay.GROUND_TRUTH, "ground truth")] if has_truth else []))


def _agreement_without_truth(display: Display) -> bool:
    """Agreement asked for, no ground truth to agree with: the prediction itself is drawn there
    (filled or outlined as the agreement would be), so a case without truth never shows bare."""
    return LAYER_AGREEMENT in display.layers and LAYER_PREDICTION not in display.layers


def stack_layers(
    prediction: np.ndarray, truth: np.ndarray | None, display: Display,
    uncertain: np.ndarray | None,
) -> list[Layer]:
    """The visible layers of one slice, bottom to top."""
    layers: list[Layer] = []
    if LAYER_AGREEMENT in display.layers and truth is not None:
        labels = overlay.agreement_labels(prediction, truth)
        layers += [(labels == 1, overlay.TRUE_POSITIVE, display.mode),
                   (labels == 2, overlay.FALSE_POSITIVE, display.mode),
                   (labels == 3, overlay.FALSE_NEGATIVE, display.mode)]
    elif _agreement_without_truth(display):
        layers.append((prediction, overlay.PREDICTION, display.mode))
    if LAYER_TRUTH in display.layers and truth is not None:
        layers.append((truth, overlay.GROUND_TRUTH, "contour"))
    if LAYER_PREDICTION in display.layers:
        layers.append((prediction, overlay.PREDICTION, "contour"))
    if uncertain is not None:
        layers.append((uncertain, overlay.UNCERTAIN, "fill"))
    return layers


def stack_legend(display: Display, has_truth: bool) -> None:
    items: list[tuple[overlay.RGB, str]] = []
    if LAYER_AGREEMENT in display.layers and has_truth:
        items += [(overlay.TRUE_POSITIVE, "both (TP)"), (overlay.FALSE_POSITIVE, "prediction only"
                   " (FP)"), (overlay.FALSE_NEGATIVE, "missed truth (FN)")]
    if LAYER_TRUTH in display.layers and has_truth:
        items.append((overlay.GROUND_TRUTH, "ground truth"))
    if LAYER_PREDICTION in display.layers or (not has_truth and _agreement_without_truth(display)):
        items.append((overlay.PREDICTION, "prediction"))
    if LAYER_UNCERTAINTY in display.layers:
        items.append((overlay.UNCERTAIN, "uncertain (mirror disagrees)"))
    if items:
        legend(items)
