"""Reading the model card for people: a short summary, and which split a patient was in.

Both take a ``models.card.ModelCard`` or the card as JSON (what ``GET /v1/model`` returns),
which is validated into one first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.card import CheckpointError, ModelCard

SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}

CardLike = ModelCard | Mapping[str, Any]


def as_card(card: CardLike) -> ModelCard:
    """``card`` as a ModelCard; CheckpointError naming the bad field if it is not one."""
    return card if isinstance(card, ModelCard) else ModelCard.from_json(dict(card))


def split_of(card: CardLike, patient_id: str) -> str | None:
    """``"train"``, ``"val"`` or ``"test"`` when the card's split lists this patient, else None
    (also for a card that cannot be read)."""
    try:
        split = as_card(card).split
    except CheckpointError:
        return None
    return None if split is None else split.part_of(patient_id)


def _number(value: float | int) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary(card: CardLike) -> list[str]:
    """Markdown bullet lines: name and version, network, input, data, split, metrics, use."""
    try:
        card = as_card(card)
    except CheckpointError as exc:
        return [f"- **Model card:** cannot be read ({exc})"]
    lines = []
    if card.name:
        lines.append(f"- **Model:** {card.name}"
                     + (f" (version {card.version})" if card.version else ""))
    lines.append(f"- **Network:** 2-D U-Net ({card.model.architecture}) with a "
                 f"{card.model.backbone} encoder")
    prep = card.preprocessing
    lines.append(f"- **Input:** slices resized to {prep.image_size} px, channels "
                 f"{', '.join(prep.channels)}; output at the input's size")
    if card.data_source:
        lines.append(f"- **Training data:** {card.data_source}")
    if card.split is not None:
        counts = [f"{len(getattr(card.split, p))} {name}" for p, name in SPLIT_NAMES.items()]
        fit = (" (final fit: trained on the training and validation patients)"
               if card.trained_on_val else "")
        lines.append(f"- **Split (by patient):** {', '.join(counts)} patients{fit}")
    numbers = card.metrics.numbers() if card.metrics else {}
    if card.metrics and numbers:
        source = ("of this file, scored through the Predictor" if card.metrics.scored_with
                  else "recorded in training")
        in_sample = " (validation figures are in-sample)" if card.metrics.val_in_sample else ""
        lines.append(f"- **Metrics {source}{in_sample}:** "
                     + ", ".join(f"{k.replace('_', ' ')} {_number(v)}" for k, v in numbers.items()))
    if card.intended_use:
        lines.append(f"- **Intended use:** {card.intended_use}")
    return lines
