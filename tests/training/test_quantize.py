"""``python -m training.quantize`` and the engine flags of ``training.evaluate``, on the
synthetic kaggle_3m folder with a tiny random-weights checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.test_metrics import untrained_checkpoint
from training.evaluate import evaluate
from training.evaluate import main as evaluate_main

pytest.importorskip("openvino", reason="the openvino engine needs openvino installed")


def test_quantize_writes_a_validated_int8_model_beside_the_weights(
    synthetic_lgg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("nncf", reason="training.quantize needs the quantize extra (nncf)")
    from inference.engines.openvino_engine import int8_paths
    from inference.predictor import Predictor
    from training.quantize import main

    weights, split = untrained_checkpoint(synthetic_lgg, tmp_path / "ckpt.safetensors")
    code = main(["--checkpoint", str(weights), "--data-dir", str(synthetic_lgg),
                 "--calibration-slices", "8", "--reference-engine", "openvino"])  # fmt: skip
    assert code == 0
    xml, manifest_path = int8_paths(weights)
    assert xml.name == "ckpt.int8.xml" and xml.with_suffix(".bin").stat().st_size > 0
    manifest = json.loads(manifest_path.read_text())
    card = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["weights_sha256"] == card["weights_sha256"]
    assert manifest["calibration"]["slices"] == 8
    assert manifest["calibration"]["patients"] <= len(split.train)
    validation = manifest["validation"]
    assert validation["patients"] == len(split.val) and validation["gate"] == 0.005
    assert validation["delta_mean_patient_dice"] == pytest.approx(
        validation["int8_mean_patient_dice"] - validation["reference_mean_patient_dice"])
    within = abs(validation["delta_mean_patient_dice"]) <= 0.005
    assert ("within" if within else "OUTSIDE") in capsys.readouterr().out
    # auto takes int8 exactly when the recorded gate holds
    assert (Predictor.from_checkpoint(weights).precision == "int8") is within


def test_quantize_without_training_patients_fails_cleanly(
    synthetic_lgg: Path, tmp_path: Path
) -> None:
    pytest.importorskip("nncf", reason="training.quantize needs the quantize extra (nncf)")
    from training.quantize import main

    weights, _ = untrained_checkpoint(synthetic_lgg, tmp_path / "ckpt.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--checkpoint", str(weights), "--data-dir", str(empty)]) == 1
    assert not (tmp_path / "ckpt.int8.xml").exists()


def test_evaluate_reports_the_engine_it_ran(synthetic_lgg: Path, tmp_path: Path) -> None:
    weights, split = untrained_checkpoint(synthetic_lgg, tmp_path / "ckpt.safetensors")
    torch_summary = evaluate(weights, synthetic_lgg, tmp_path / "torch", split_name="val",
                             device="cpu", engine="torch", precision="fp32")  # fmt: skip
    assert torch_summary["engine"] == "torch" and torch_summary["runtime"]["engine"] == "torch"
    assert torch_summary["runtime"]["precision"] == "fp32"
    code = evaluate_main(["--checkpoint", str(weights), "--data-dir", str(synthetic_lgg),
                          "--out", str(tmp_path / "ov"), "--split", "val", "--device", "cpu",
                          "--engine", "openvino", "--precision", "fp32"])  # fmt: skip
    assert code == 0
    ov_summary = json.loads((tmp_path / "ov" / "summary.json").read_text())
    assert ov_summary["engine"] == "openvino" and "cpu_flags" in ov_summary["runtime"]
    # the same model through either engine: the same per-patient Dice (up to pixels that sit
    # on the threshold)
    for patient in split.val:
        assert ov_summary["patient_dice"][patient] == pytest.approx(
            torch_summary["patient_dice"][patient], abs=0.01)
