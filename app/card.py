"""Reading the model card for people: a short summary, and which split a patient was in."""

from __future__ import annotations

from typing import Any

from models.checkpoint import trained_on_val

SPLIT_PARTS = ("train", "val", "test")
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def split_of(card: dict[str, Any], patient_id: str) -> str | None:
    """``"train"``, ``"val"`` or ``"test"`` when the card's split lists this patient, else None."""
    split = card.get("split")
    if not isinstance(split, dict):
        return None
    for part in SPLIT_PARTS:
        members = split.get(part)
        if isinstance(members, list) and patient_id in members:
            return part
    return None


def _number(value: float | int) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary(card: dict[str, Any]) -> list[str]:
    """Markdown bullet lines: name and version, network, input, data, split, metrics, use."""
    lines = []
    name = card.get("name")
    if name:
        version = card.get("version")
        lines.append(f"- **Model:** {name}" + (f" (version {version})" if version else ""))
    model = card.get("model")
    if isinstance(model, dict):
        lines.append(f"- **Network:** 2-D U-Net ({model.get('architecture', '?')}) with a "
                     f"{model.get('backbone', '?')} encoder")
    prep = card.get("preprocessing")
    if isinstance(prep, dict):
        channels = prep.get("channels") or []
        lines.append(f"- **Input:** slices resized to {prep.get('image_size', '?')} px, channels "
                     f"{', '.join(map(str, channels)) or '?'}; output at the input's size")
    if card.get("data_source"):
        lines.append(f"- **Training data:** {card['data_source']}")
    split = card.get("split")
    if isinstance(split, dict):
        counts = [f"{len(split[p])} {SPLIT_NAMES[p]}" for p in SPLIT_PARTS
                  if isinstance(split.get(p), list)]
        if counts:
            fit = (" (final fit: trained on the training and validation patients)"
                   if trained_on_val(card) else "")
            lines.append(f"- **Split (by patient):** {', '.join(counts)} patients{fit}")
    metrics = card.get("metrics")
    if isinstance(metrics, dict):
        numbers = {k: v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            source = ("of this file, scored through the Predictor" if "scored_with" in metrics
                      else "recorded in training")
            in_sample = (" (validation figures are in-sample)" if metrics.get("val_in_sample")
                         else "")
            lines.append(f"- **Metrics {source}{in_sample}:** "
                         + ", ".join(f"{k.replace('_', ' ')} {_number(v)}"
                                     for k, v in numbers.items()))
    if card.get("intended_use"):
        lines.append(f"- **Intended use:** {card['intended_use']}")
    return lines
