"""Volumetric metrics and their empty-mask conventions on volumes with known answers, the LR
schedule, and training.evaluate end to end with an (untrained) checkpoint on synthetic data."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.split import Split
from inference.metrics import dice_from_counts, summarize, volume_metrics
from inference.postprocessing import keep_largest_component
from tests.inference.samples import make_checkpoint
from training.engine import ValidationResult
from training.evaluate import evaluate
from training.evaluate import main as evaluate_main
from training.schedule import warmup_cosine


def cube(shape: tuple[int, int, int], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    volume = np.zeros(shape, dtype=np.uint8)
    volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return volume


SHAPE = (4, 16, 16)
EMPTY = np.zeros(SHAPE, dtype=np.uint8)
TUMOUR = cube(SHAPE, (1, 2, 2), (3, 6, 6))  # 2 x 4 x 4 = 32 voxels


def test_perfect_prediction_scores_one() -> None:
    m = volume_metrics(TUMOUR, TUMOUR)
    assert m == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0}


def test_disjoint_prediction_scores_zero() -> None:
    far = cube(SHAPE, (1, 10, 10), (3, 14, 14))
    m = volume_metrics(far, TUMOUR)
    assert m["dice"] == 0.0 and m["iou"] == 0.0 and m["precision"] == 0.0 and m["recall"] == 0.0
    assert m["hd95"] > 5.0


def test_half_overlap_has_the_known_scores() -> None:
    # prediction: 32 voxels, 16 of them inside the 32-voxel truth
    shifted = cube(SHAPE, (1, 2, 4), (3, 6, 8))
    m = volume_metrics(shifted, TUMOUR)
    assert m["dice"] == pytest.approx(2 * 16 / 64)
    assert m["iou"] == pytest.approx(16 / 48)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["hd95"] == pytest.approx(2.0)  # 2 pixels of shift
    assert dice_from_counts(16, 16, 16) == pytest.approx(m["dice"])


def test_empty_mask_conventions() -> None:
    both_empty = volume_metrics(EMPTY, EMPTY)
    assert both_empty["dice"] == 1.0 and both_empty["iou"] == 1.0
    assert math.isnan(both_empty["precision"]) and math.isnan(both_empty["recall"])
    assert math.isnan(both_empty["hd95"])
    false_alarm = volume_metrics(TUMOUR, EMPTY)
    assert false_alarm["dice"] == 0.0 and false_alarm["precision"] == 0.0
    assert math.isnan(false_alarm["recall"]) and math.isnan(false_alarm["hd95"])
    missed = volume_metrics(EMPTY, TUMOUR)
    assert missed["dice"] == 0.0 and missed["recall"] == 0.0
    assert math.isnan(missed["precision"]) and math.isnan(missed["hd95"])
    assert dice_from_counts(0, 0, 0) == 1.0 and dice_from_counts(0, 5, 0) == 0.0


def test_summary_leaves_nan_out_and_counts_what_entered() -> None:
    rows = [volume_metrics(TUMOUR, TUMOUR), volume_metrics(EMPTY, EMPTY),
            volume_metrics(EMPTY, TUMOUR)]
    stats = summarize(rows)
    assert stats["patients"] == 3
    assert stats["dice"]["mean"] == pytest.approx(2 / 3) and stats["dice"]["n"] == 3
    assert stats["precision"]["mean"] == 1.0 and stats["precision"]["n"] == 1
    assert stats["hd95"]["n"] == 1 and stats["hd95"]["median"] == 0.0


def test_summary_std_is_the_sample_std() -> None:
    """std over patients divides by n - 1 (sample), and is None where fewer than two entered."""
    rows = [volume_metrics(TUMOUR, TUMOUR), volume_metrics(EMPTY, EMPTY),
            volume_metrics(EMPTY, TUMOUR)]  # Dice 1, 1, 0
    stats = summarize(rows)
    assert stats["dice"]["std"] == pytest.approx(math.sqrt(1 / 3))  # population: sqrt(2 / 9)
    assert stats["precision"]["n"] == 1 and stats["precision"]["std"] is None


def test_validation_mean_is_over_patients_not_slices() -> None:
    result = ValidationResult(0.1, {"a": 1.0, "b": 0.0, "c": 0.5})
    assert result.mean_dice == pytest.approx(0.5) and result.median_dice == 0.5


def test_largest_component_keeps_only_the_biggest_blob_in_3d() -> None:
    volume = TUMOUR.copy()
    volume[0, 12, 12] = 1  # a one-voxel island
    kept = keep_largest_component(volume)
    assert kept.sum() == TUMOUR.sum() and kept[0, 12, 12] == 0
    assert keep_largest_component(EMPTY).sum() == 0


def test_warmup_then_cosine_schedule() -> None:
    def f(step: int) -> float:
        return warmup_cosine(step, warmup_steps=4, total_steps=14, final_factor=0.1)

    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.55)  # half-way down the cosine
    assert f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(4, 20))


def untrained_checkpoint(data_dir: Path, path: Path) -> tuple[Path, Split]:
    """The tiny random-weights checkpoint at 32 px, its card's split over ``data_dir``."""
    patients = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
    split = Split(train=patients[:5], val=patients[5:6], test=patients[6:], seed=0)
    return make_checkpoint(path, image_size=32, split=split.to_dict()), split


def test_evaluate_writes_consistent_outputs(synthetic_lgg: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    weights, split = untrained_checkpoint(synthetic_lgg, tmp_path / "ckpt.safetensors")
    out = tmp_path / "eval"
    code = evaluate_main(["--checkpoint", str(weights), "--data-dir", str(synthetic_lgg),
                          "--out", str(out), "--device", "cpu", "--largest-component"])
    assert code == 0
    with (out / "per_patient.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["patient_id"] for r in rows] == split.test
    assert all(r["slices"] == "5" and r["true_voxels"] != "0" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients"] == 2 and summary["largest_component"] is True
    assert summary["mean_patient_dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    assert 0.0 <= summary["mean_patient_dice"] <= 1.0
    assert {"median_patient_dice", "std_patient_dice", "mean_patient_iou",
            "mean_patient_hd95"} <= set(summary)
    assert (out / "per_patient_dice.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert split.test[0] in printed and "mean patient Dice" in printed


def test_evaluate_runs_the_predictor(synthetic_lgg: Path, tmp_path: Path) -> None:
    """Its masks are the Predictor's, slice by slice: evaluate has no forward pass of its own."""
    from data.kaggle3m import read_image, read_mask, scan_dataset
    from inference.metrics import dice
    from inference.predictor import Predictor

    weights, split = untrained_checkpoint(synthetic_lgg, tmp_path / "ckpt.safetensors")
    summary = evaluate(weights, synthetic_lgg, tmp_path / "eval", split_name="val",
                       device="cpu", precision="fp32")
    assert summary["precision"] == "fp32" and summary["model"].endswith(
        summary["checkpoint_sha256"][:12])
    predictor = Predictor.from_checkpoint(weights, precision="fp32")
    patient = next(p for p in scan_dataset(synthetic_lgg) if p.patient_id == split.val[0])
    masks = [predictor.predict_slice(read_image(s.image_path)).mask for s in patient.slices]
    truth = [read_mask(s.mask_path) for s in patient.slices]
    assert summary["patient_dice"][split.val[0]] == pytest.approx(
        dice(np.stack(masks), np.stack(truth)), abs=1e-9)


def test_split_folder_scores_every_patient_and_warns_about_seen_ones(
    synthetic_lgg: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights, split = untrained_checkpoint(synthetic_lgg, tmp_path / "ckpt.safetensors")
    # An external cohort: two unseen patients and one the model was trained on.
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for name in (*split.test, split.train[0]):
        shutil.copytree(synthetic_lgg / name, cohort / name)
    out = tmp_path / "eval"
    with caplog.at_level("WARNING", logger="training.evaluate"):
        code = evaluate_main(["--checkpoint", str(weights), "--data-dir", str(cohort),
                              "--out", str(out), "--device", "cpu", "--split", "folder"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "folder" and summary["patients"] == 3
    assert sorted(summary["patient_dice"]) == sorted((*split.test, split.train[0]))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "1 of the 3 patients" in warned[0]
    assert split.train[0] in warned[0] and split.test[0] not in warned[0]


def test_evaluate_fails_cleanly_on_a_missing_checkpoint(tmp_path: Path) -> None:
    code = evaluate_main(["--checkpoint", str(tmp_path / "none.safetensors"),
                          "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 1
