"""Checkpoints: weights as safetensors plus a JSON model card beside them.

``run/best.safetensors`` has its card in ``run/best.json``: a ``models.card.ModelCard``, which
carries everything needed to rebuild the model and its preprocessing (``model``,
``preprocessing``), plus the provenance (config, split, metrics, versions, hardware, wall time,
intended use). Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from data.atomic import atomic_write_bytes, atomic_write_json
from models.card import FORMAT, INTENDED_USE, CheckpointError, ModelCard
from models.network import build_model

__all__ = ["FORMAT", "INTENDED_USE", "CheckpointError", "card_path", "write_card",
           "load_card", "load_checkpoint", "read_checkpoint", "save_checkpoint"]


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(
    weights_path: str | Path,
    model: torch.nn.Module,
    card: ModelCard,
    dtype: torch.dtype | None = None,
) -> ModelCard:
    """Save ``model`` weights and its card; returns the card written.

    ``dtype`` (e.g. ``torch.bfloat16``) stores the learnable parameters in that precision;
    buffers (BatchNorm running statistics, whose variances reach 1e7) always stay float32, since
    a narrow type cannot hold them. Non-finite values are refused, before the cast and after it.
    The weights' SHA-256 is added to the card so a tampered or truncated file is refused at load
    time, and the intended use if the card has none.
    """
    parameters = {name for name, _ in model.named_parameters()}
    state = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        _require_finite(name, t, "the model holds")
        if dtype is not None and name in parameters and t.is_floating_point():
            t = t.to(dtype)
            _require_finite(name, t, f"casting to {dtype} gives")
        state[name] = t
    blob = save(state, metadata={"format": FORMAT})
    full = card.with_updates(intended_use=card.intended_use or INTENDED_USE,
                             weights_sha256=hashlib.sha256(blob).hexdigest())
    atomic_write_bytes(weights_path, blob)
    write_card(weights_path, full)
    return full


def write_card(weights_path: str | Path, card: ModelCard) -> None:
    """Write (or rewrite) the card beside ``weights_path``, atomically."""
    atomic_write_json(card_path(weights_path), card.to_json())


def _require_finite(name: str, tensor: torch.Tensor, what: str) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise CheckpointError(
            f"{what} {bad} non-finite value(s) in {name}: refusing to write or load weights "
            "that cannot reproduce the model"
        )


def load_card(weights_path: str | Path) -> ModelCard:
    """The card beside ``weights_path``; CheckpointError naming the bad field if it is invalid."""
    path = card_path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"model card not found: {path.name} must sit beside the weights")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"model card {path.name} is not valid JSON: {exc}") from exc
    return ModelCard.from_json(data, source=path.name)


def read_checkpoint(weights_path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """The verified tensors and card of a checkpoint, without building the model.

    Checks presence, the card, the SHA-256 and the safetensors format, not the values:
    ``load_checkpoint`` is what inference uses, and it also refuses non-finite tensors.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path.name}")
    card = load_card(path)
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if card.weights_sha256 not in (None, digest):
        raise CheckpointError(
            f"{path.name} does not match its card (sha256 {digest[:12]}..., card says "
            f"{str(card.weights_sha256)[:12]}...): truncated or modified"
        )
    try:
        state = load(blob)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path.name} as safetensors: {exc}") from exc
    return state, card


def build_from_card(card: ModelCard, state: dict[str, torch.Tensor], name: str) -> torch.nn.Module:
    """The card's architecture with ``state`` loaded (float32, eval mode); CheckpointError if
    the tensors do not fit it."""
    model_cfg = card.model
    model = build_model(model_cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{name} does not fit a {model_cfg.backbone} FlexibleUNet: "
            f"{len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(shapes)} wrong-shape tensors"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.eval()


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]


def load_checkpoint(
    weights_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the model from its card and load the weights (fp32, eval mode).

    Raises CheckpointError with the reason for a missing, truncated, tampered or mismatched file,
    or one holding non-finite values.
    """
    state, card = read_checkpoint(weights_path)
    name = Path(weights_path).name
    for tensor_name, tensor in state.items():
        _require_finite(tensor_name, tensor, f"{name} holds")
    return build_from_card(card, state, name).to(device), card
