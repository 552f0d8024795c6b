"""Checkpoint I/O: what is written can be read back, and nothing non-finite gets either way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save

from data.preprocessing import PreprocessingConfig
from models.card import ModelCard
from models.checkpoint import CheckpointError, card_path, load_checkpoint, save_checkpoint
from models.network import ModelConfig, build_model

BN_VAR = "decoder.blocks.0.convs.conv_0.adn.N.running_var"


def tiny_model() -> tuple[torch.nn.Module, ModelCard]:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18")
    card = ModelCard(model=cfg, preprocessing=PreprocessingConfig(image_size=32))
    return build_model(cfg), card


def test_bf16_release_keeps_buffers_in_float32(tmp_path: Path) -> None:
    model, card = tiny_model()
    buffers = dict(model.named_buffers())
    buffers[BN_VAR].fill_(1.7e7)  # what the first decoder BatchNorm really sees; fp16 max 65504
    path = tmp_path / "w.safetensors"
    save_checkpoint(path, model, card, dtype=torch.bfloat16)
    stored = load_file(str(path))
    params = {name for name, _ in model.named_parameters()}
    assert {stored[n].dtype for n in params} == {torch.bfloat16}
    assert stored[BN_VAR].dtype == torch.float32 and bool((stored[BN_VAR] == 1.7e7).all())
    loaded, _ = load_checkpoint(path)
    assert torch.equal(dict(loaded.named_buffers())[BN_VAR], buffers[BN_VAR])


def test_a_cast_that_overflows_is_refused(tmp_path: Path) -> None:
    model, card = tiny_model()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6  # finite in fp32, inf in fp16
    path = tmp_path / "w.safetensors"
    with pytest.raises(CheckpointError, match="casting to torch.float16 gives 1 non-finite"):
        save_checkpoint(path, model, card, dtype=torch.float16)
    assert not path.exists() and not card_path(path).exists()


def test_non_finite_weights_are_refused_on_save_and_on_load(tmp_path: Path) -> None:
    model, card = tiny_model()
    dict(model.named_buffers())[BN_VAR][3] = float("inf")
    with pytest.raises(CheckpointError, match=f"1 non-finite value.*{BN_VAR}"):
        save_checkpoint(tmp_path / "a.safetensors", model, card)
    # A file written by other means (e.g. an older release): loading names the tensor.
    blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
    path = tmp_path / "b.safetensors"
    path.write_bytes(blob)
    card_path(path).write_text(json.dumps({**card.to_json(),
                                           "weights_sha256": hashlib.sha256(blob).hexdigest()}))
    with pytest.raises(CheckpointError, match=f"b.safetensors holds 1 non-finite.*{BN_VAR}"):
        load_checkpoint(path)
