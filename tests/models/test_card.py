"""models/card.py: the typed model card loads what is stored and writes it back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.preprocessing import PreprocessingConfig
from models import BUNDLED_CHECKPOINT
from models.card import FORMAT, CheckpointError, ModelCard
from models.checkpoint import card_path, load_card, write_card
from models.network import ModelConfig

BUNDLED_CARD = card_path(BUNDLED_CHECKPOINT)


def minimal() -> dict:
    return ModelCard(model=ModelConfig(backbone="resnet18"),
                     preprocessing=PreprocessingConfig(image_size=64)).to_json()


def test_the_bundled_card_round_trips_unchanged(tmp_path: Path) -> None:
    stored = json.loads(BUNDLED_CARD.read_text())
    card = load_card(BUNDLED_CHECKPOINT)
    assert card.to_json() == stored
    assert list(card.to_json()) == list(stored)  # and in the stored order
    # Typed sections, not dicts.
    assert card.model.backbone == "resnet50" and card.preprocessing.image_size == 256
    assert card.split is not None and len(card.split.test) == 11
    assert card.metrics is not None and card.metrics.scored_with is not None
    assert card.metrics.scored_with.precision == stored["metrics"]["scored_with"]["precision"]
    assert not card.trained_on_val
    # Written back, the file is byte-identical.
    copy = tmp_path / "copy.safetensors"
    write_card(copy, card)
    assert card_path(copy).read_text() == BUNDLED_CARD.read_text()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": {"backbone": "vgg16"}}, "model.backbone"),
        ({"preprocessing": {"image_size": 33}}, "preprocessing.image_size"),
        ({"epoch": "last"}, "epoch"),
        ({"split": {"seed": 0, "fractions": [0.7, 0.15, 0.15], "train": "A", "val": [],
                    "test": []}}, "split.train"),
        ({"metrics": {"scored_with": {"tta": "maybe"}}}, "metrics.scored_with.tta"),
    ],
)
def test_a_bad_card_is_a_checkpoint_error_naming_the_field(
    tmp_path: Path, change: dict, field: str
) -> None:
    path = tmp_path / "bad.safetensors"
    card_path(path).write_text(json.dumps({**minimal(), **change}))
    with pytest.raises(CheckpointError, match=rf"bad\.json is invalid: {field}: "):
        load_card(path)


def test_a_card_without_a_section_or_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    card_path(path).write_text(json.dumps({k: v for k, v in minimal().items() if k != "model"}))
    with pytest.raises(CheckpointError, match="model: Field required"):
        load_card(path)
    card_path(path).write_text(json.dumps({**minimal(), "format": "other/1"}))
    with pytest.raises(CheckpointError, match=f"not a {FORMAT} model card"):
        load_card(path)


def test_unknown_fields_of_older_cards_are_kept_and_written_back(tmp_path: Path) -> None:
    old = {**minimal(), "retired_field": {"kept": [1, 2]},
           "metrics": {"val_mean_patient_dice": 0.8, "early_stopped": True}}
    card = ModelCard.from_json(old)
    assert card.model_extra == {"retired_field": {"kept": [1, 2]}}
    assert card.to_json() == old
    updated = card.with_updates(note="re-scored")
    assert updated.to_json() == {**old, "note": "re-scored"}


def test_a_card_dumps_only_what_it_holds() -> None:
    card = minimal()
    assert set(card) == {"format", "model", "preprocessing"}
    assert card["format"] == FORMAT and list(card)[0] == "format"
    # The network and preprocessing sections are complete: nothing is left to code defaults.
    assert card["model"] == ModelConfig(backbone="resnet18").model_dump(mode="json")
    assert card["preprocessing"]["channels"] == ["pre-contrast", "FLAIR", "post-contrast"]


def test_trained_on_val_reads_the_config() -> None:
    card = ModelCard.from_json(minimal())
    assert not card.trained_on_val
    assert card.with_updates(config={"data": {"train_on_val": True}}).trained_on_val
    assert not card.with_updates(config={"data": "oops"}).trained_on_val
