"""``python -m training.release`` on a seconds-long synthetic run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save

from models.checkpoint import INTENDED_USE, card_path, load_checkpoint, read_checkpoint
from training.evaluate import evaluate
from training.release import main as release_main
from training.train import main as train_main

from .conftest import tiny_args

BN_VAR = "decoder.blocks.0.convs.conv_0.adn.N.running_var"


@pytest.fixture(scope="module")
def run(synthetic_lgg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("release") / "run"
    assert train_main(tiny_args(synthetic_lgg, run, "--epochs", "1")) == 0
    return run


def test_release_scores_the_file_it_wrote(synthetic_lgg: Path, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "weights" / "release.safetensors"
    code = release_main(["--run", str(run), "--data-dir", str(synthetic_lgg), "--out", str(out),
                         "--version", "9.9.9", "--device", "cpu", "--note", "tiny budget",
                         "--reports", str(tmp_path / "reports")])
    assert code == 0
    card = json.loads(card_path(out).read_text())
    assert card["version"] == "9.9.9" and card["intended_use"] == INTENDED_USE
    assert card["note"] == "tiny budget" and "Buda" in card["citation"][0]
    assert card["split"]["test"] == json.loads((run / "split.json").read_text())["test"]
    stored = load_file(str(out))
    model, loaded = load_checkpoint(out)
    params = {name for name, _ in model.named_parameters()}
    assert {stored[n].dtype for n in params} == {torch.bfloat16}
    assert {v.dtype for n, v in stored.items() if n not in params and v.is_floating_point()} == {
        torch.float32
    }
    assert loaded.to_json() == card
    assert card["weights_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    # The card's figures are those of the released bytes, through the Predictor, for val and test.
    for part in ("val", "test"):
        again = evaluate(out, synthetic_lgg, tmp_path / f"again-{part}", split_name=part,
                         device="cpu")
        assert card["metrics"][f"{part}_mean_patient_dice"] == pytest.approx(
            again["mean_patient_dice"], abs=1e-6)
        assert card["metrics"][f"{part}_patient_dice"] == pytest.approx(again["patient_dice"],
                                                                        abs=1e-6)
    assert card["metrics"]["scored_with"]["model"].startswith("lgg-resnet50-unet-znorm-9.9.9+")
    assert "val_mean_patient_dice" in card["training_metrics"]  # the loop's own, kept apart


def test_non_finite_batchnorm_statistics_are_refused_or_re_estimated(
    synthetic_lgg: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A checkpoint like releases 0.1.0/0.2.0: one BatchNorm variance cast to infinity.
    state, card = read_checkpoint(run / "best.safetensors")
    state[BN_VAR] = torch.full_like(state[BN_VAR], float("inf"))
    broken = tmp_path / "broken.safetensors"
    blob = save(state)
    broken.write_bytes(blob)
    card_path(broken).write_text(json.dumps({**card.to_json(),
                                             "weights_sha256": hashlib.sha256(blob).hexdigest()}))
    out = tmp_path / "fixed.safetensors"
    base = ["--checkpoint", str(broken), "--data-dir", str(synthetic_lgg), "--out", str(out),
            "--version", "0.0.2", "--device", "cpu", "--reports", str(tmp_path / "r")]
    assert release_main(base) == 1
    assert "--recalibrate-batchnorm" in capsys.readouterr().err and not out.exists()

    assert release_main([*base, "--recalibrate-batchnorm", "12"]) == 0
    fixed = load_file(str(out))[BN_VAR]
    assert bool(torch.isfinite(fixed).all()) and bool((fixed > 0).all())
    repair = json.loads(card_path(out).read_text())["repairs"][0]
    assert repair["batchnorm_recalibrated"] == [BN_VAR.rsplit(".", 1)[0]]
    assert repair["from_training_slices"] == 12 and repair["from"] == "broken.safetensors"


def test_a_final_fit_trains_on_val_and_releases_its_last_epoch(
    synthetic_lgg: Path, tmp_path: Path
) -> None:
    run = tmp_path / "final"
    assert train_main(tiny_args(synthetic_lgg, run, "--epochs", "2",
                                "--set", "data.train_on_val=true")) == 0
    split = json.loads((run / "split.json").read_text())
    _, last = read_checkpoint(run / "last.safetensors")
    assert last.trained_on_val
    assert last.split is not None and last.split.test == split["test"]  # test stays held out
    # best.safetensors may be an earlier epoch chosen on in-sample Dice; the release takes last.
    out = tmp_path / "release.safetensors"
    assert release_main(["--run", str(run), "--data-dir", str(synthetic_lgg), "--out", str(out),
                         "--version", "9.9.9", "--device", "cpu",
                         "--reports", str(tmp_path / "reports")]) == 0
    card = json.loads(card_path(out).read_text())
    assert card["epoch"] == 2 and card["metrics"]["val_in_sample"] is True
    assert "val_in_sample" not in json.loads(card_path(run / "last.safetensors").read_text())[
        "metrics"]


def test_a_final_fit_cannot_stop_early_on_its_own_training_patients(
    synthetic_lgg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = train_main(tiny_args(synthetic_lgg, tmp_path / "run",
                                "--set", "training.early_stopping_patience=3",
                                "--set", "data.train_on_val=true"))
    assert code != 0
    assert "early_stopping_patience" in capsys.readouterr().err
