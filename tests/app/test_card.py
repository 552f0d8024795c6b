"""app/card.py: the model-card summary and the split lookup."""

from __future__ import annotations

from app import card
from data.preprocessing import PreprocessingConfig
from models.card import ModelCard
from models.network import ModelConfig

CARD = ModelCard(
    name="lggseg-resnet50-unet-znorm-adam",
    version="1.0.0",
    model=ModelConfig(backbone="resnet50"),
    preprocessing=PreprocessingConfig(image_size=256),
    data_source="LGG MRI segmentation (kaggle_3m)",
    split={"seed": 0, "fractions": [0.7, 0.15, 0.15], "train": ["A", "B"], "val": ["C"],
           "test": ["D"]},
    metrics={"test_mean_patient_dice": 0.8123, "best_epoch": 40, "early_stopped": True},
    intended_use="research, not for diagnostic use",
)


def test_split_of_finds_each_part_and_nothing_else() -> None:
    assert [card.split_of(CARD, p) for p in "ABCDE"] == ["train", "train", "val", "test", None]
    # The card as JSON (what the API returns) reads the same.
    assert [card.split_of(CARD.to_json(), p) for p in "ABCDE"] == [
        "train", "train", "val", "test", None]
    assert card.split_of(CARD.with_updates(split=None), "A") is None
    assert card.split_of({}, "A") is None
    assert card.split_of({**CARD.to_json(), "split": "oops"}, "A") is None


def test_summary_names_the_essentials() -> None:
    text = "\n".join(card.summary(CARD))
    assert "lggseg-resnet50-unet-znorm-adam (version 1.0.0)" in text
    assert "resnet50 encoder" in text
    assert "256 px, channels pre-contrast, FLAIR, post-contrast" in text
    assert "2 training, 1 validation, 1 test patients" in text
    assert "test mean patient dice 0.812" in text and "best epoch 40" in text
    assert "early stopped" not in text  # booleans are not metrics
    assert "research, not for diagnostic use" in text
    assert card.summary(CARD.to_json()) == card.summary(CARD)


def test_an_unreadable_card_is_said_so_with_the_bad_field() -> None:
    lines = card.summary({**CARD.to_json(), "model": {"backbone": "vgg16"}})
    assert len(lines) == 1 and "cannot be read" in lines[0] and "model.backbone" in lines[0]
    assert "not a lggseg-checkpoint/1 model card" in card.summary({})[0]


def test_summary_says_where_the_figures_come_from_and_flags_a_final_fit() -> None:
    scored = CARD.with_updates(
        config={"data": {"train_on_val": True}},
        metrics={"test_mean_patient_dice": 0.8, "val_mean_patient_dice": 0.9,
                 "val_in_sample": True, "scored_with": {"precision": "bf16"}})
    text = "\n".join(card.summary(scored))
    assert "(final fit: trained on the training and validation patients)" in text
    assert "Metrics of this file, scored through the Predictor (validation figures are " \
           "in-sample)" in text
    assert "Metrics recorded in training" in "\n".join(card.summary(CARD))
