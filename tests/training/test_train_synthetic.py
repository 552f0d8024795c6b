"""Training runs on the synthetic kaggle_3m folder: resume exactness, NaN stop, DDP replicas."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from models.checkpoint import load_checkpoint
from tests.training.conftest import sets, tiny_args
from training import train as train_module
from training.checkpointing import load_resume
from training.distributed import state_sha256
from training.engine import NonFiniteError, check_finite_weights
from training.schedule import warmup_cosine
from training.train import main

REPO = Path(__file__).resolve().parents[2]


def weights_digest(path: Path) -> str:
    state = load_file(str(path))
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode() + state[name].numpy().tobytes())
    return digest.hexdigest()


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # timings differ between runs
        row.pop("epoch_time_s")
        row.pop("train_images_per_s")
    return rows


@pytest.fixture(scope="module")
def reference_run(synthetic_lgg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two uninterrupted epochs; other tests compare against it."""
    out = tmp_path_factory.mktemp("reference")
    assert main(tiny_args(synthetic_lgg, out)) == 0
    return out


def test_run_writes_checkpoints_cards_and_logs(reference_run: Path) -> None:
    for name in ("config.yaml", "split.json", "metrics.csv", "best.safetensors", "best.json",
                 "last.safetensors", "last.json", "resume.pt", "learning_curves.png"):
        assert (reference_run / name).is_file(), name
    from PIL import Image

    with Image.open(reference_run / "learning_curves.png") as curves:
        assert curves.format == "PNG" and curves.size == (1000, 360)
    assert any((reference_run / "tb").iterdir())
    model, loaded = load_checkpoint(reference_run / "last.safetensors")
    card = loaded.to_json()
    assert card == json.loads((reference_run / "last.json").read_text())
    assert loaded.epoch == 2 and loaded.model.backbone == "resnet18"
    assert loaded.preprocessing.image_size == 32
    assert card["split"] == json.loads((reference_run / "split.json").read_text())
    assert set(card["versions"]) >= {"torch", "monai", "python", "numpy"}
    assert card["hardware"]["device"] == "cpu" and card["intended_use"].startswith("research")
    assert 0.0 <= card["metrics"]["val_mean_patient_dice"] <= 1.0
    rows = metric_rows(reference_run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert int(rows[1]["step"]) == card["step"] > int(rows[0]["step"]) > 0
    # resume.pt loads with weights_only=True and holds what --resume needs
    state = load_resume(reference_run / "resume.pt")
    assert state["progress"]["epoch"] == 2 and "optimizer" in state and "rng" in state
    assert state_sha256(model) != ""


def test_stop_then_resume_equals_uninterrupted(
    synthetic_lgg: Path, reference_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(synthetic_lgg, out, "--stop-after-epochs", "1")) == 0
    assert json.loads((out / "last.json").read_text())["epoch"] == 1
    assert main(["--data-dir", str(synthetic_lgg), "--out", str(out), "--resume"]) == 0
    assert weights_digest(out / "last.safetensors") == weights_digest(
        reference_run / "last.safetensors"
    )
    assert metric_rows(out) == metric_rows(reference_run)


def test_resume_refuses_a_changed_experiment(synthetic_lgg: Path, reference_run: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--out", str(reference_run), "--resume", "--set", "optimizer.lr=0.1"])
    assert code == 2
    assert "cannot change optimizer.lr" in capsys.readouterr().err


def _copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_resume_refuses_a_changed_schedule_and_says_how_to_continue(
    synthetic_lgg: Path, reference_run: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _copy_run(reference_run, tmp_path)
    config_before = (out / "config.yaml").read_text()
    changes = (["--epochs", "4"], sets("training.warmup_epochs=0"),
               sets("training.min_lr_factor=0.5"))
    for flags in changes:
        assert main(["--data-dir", str(synthetic_lgg), "--out", str(out), "--resume", *flags]) == 2
        err = capsys.readouterr().err
        assert "cannot change training." in err and "re-stretched" in err
        assert "resume without changing" in err and "--warm-restart" in err
    assert (out / "config.yaml").read_text() == config_before  # refused before writing anything
    assert main(["--out", str(out), "--warm-restart"]) == 2  # a warm restart needs --resume
    assert "use it with --resume" in capsys.readouterr().err


def test_resume_refuses_a_config_whose_schedule_differs_from_resume_pt(
    synthetic_lgg: Path, reference_run: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """config.yaml as a --warm-restart leaves it when stopped before its first epoch completes:
    resume.pt's schedule decides, a plain --resume does not silently stretch it."""
    out = _copy_run(reference_run, tmp_path)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    saved["training"]["epochs"] = 4
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main(["--data-dir", str(synthetic_lgg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "resume.pt continues the schedule 2 epochs" in err and "asks for 4 epochs" in err
    assert json.loads((out / "last.json").read_text())["epoch"] == 2  # nothing trained


def test_warm_restart_follows_a_new_schedule_recorded_in_the_card(
    synthetic_lgg: Path, reference_run: Path, tmp_path: Path
) -> None:
    """After 2 of 2 epochs (LR at its minimum): --resume --epochs 5 --warm-restart runs a new
    warm-up + cosine over epochs 3-5, not the 2-epoch curve stretched to 5 (which would jump to
    mid-curve); a later plain --resume continues the restarted schedule."""
    out = _copy_run(reference_run, tmp_path)
    lr, warmup_epochs, min_lr_factor = 0.003, 0.5, 0.01  # tiny_args and the config default
    resume = ["--data-dir", str(synthetic_lgg), "--out", str(out), "--resume",
              "--stop-after-epochs", "1"]
    assert main([*resume, "--epochs", "5", "--warm-restart"]) == 0
    assert main(resume) == 0  # epoch 4: plain resume inside the restarted schedule

    rows = metric_rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    restart_step = int(rows[1]["step"])
    steps_per_epoch = restart_step // 2
    card = json.loads((out / "last.json").read_text())
    assert card["epoch"] == 4
    assert card["schedule"] == {
        "epochs": 2, "warmup_epochs": warmup_epochs, "min_lr_factor": min_lr_factor, "lr": lr,
        "after_epoch": 0, "at_step": 0,
        "warm_restarts": [{
            "epochs": 5, "warmup_epochs": warmup_epochs, "min_lr_factor": min_lr_factor,
            "lr": lr, "after_epoch": 2, "at_step": restart_step,
        }],
    }  # fmt: skip
    assert float(rows[1]["lr"]) == pytest.approx(lr * min_lr_factor)  # the first schedule's end
    for row in rows[2:]:
        step = int(row["step"])
        restarted = lr * warmup_cosine(
            step - restart_step, warmup_steps=round(warmup_epochs * steps_per_epoch),
            total_steps=3 * steps_per_epoch, final_factor=min_lr_factor,
        )  # fmt: skip
        stretched = lr * warmup_cosine(
            step, warmup_steps=round(warmup_epochs * steps_per_epoch),
            total_steps=5 * steps_per_epoch, final_factor=min_lr_factor,
        )  # fmt: skip
        assert float(row["lr"]) == pytest.approx(restarted, rel=1e-6)
        assert restarted != pytest.approx(stretched, rel=0.05)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(
    synthetic_lgg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_train_one_epoch = train_module.train_one_epoch

    def poisoned_in_epoch_2(*args: object, epoch: int, **kwargs: object) -> object:
        if epoch == 2:  # every loss of epoch 2 is NaN
            args = (*args[:4], lambda logits, targets: logits.sum() * float("nan"), *args[5:])
        return real_train_one_epoch(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", poisoned_in_epoch_2)
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR, logger="training.train"):
        code = main(tiny_args(synthetic_lgg, out))
    assert code == 3
    assert "non-finite training loss (nan) in epoch 2" in caplog.text
    assert str(out / "last.safetensors") in caplog.text
    model, card = load_checkpoint(out / "last.safetensors")
    assert card.epoch == 1
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())
    assert load_resume(out / "resume.pt")["progress"]["epoch"] == 1


def test_diverging_learning_rate_stops_before_any_checkpoint(
    synthetic_lgg: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR, logger="training.train"):
        code = main(tiny_args(synthetic_lgg, out, *sets("optimizer.lr=1e30", "optimizer.name=adam",
                                                       "training.warmup_epochs=0")))
    assert code == 3
    assert "non-finite training loss" in caplog.text and "in epoch 1" in caplog.text
    assert "Last good checkpoint: none" in caplog.text
    assert not (out / "last.safetensors").exists() and not (out / "resume.pt").exists()


def test_non_finite_weights_are_never_checkpointed() -> None:
    model = torch.nn.Linear(2, 2)
    check_finite_weights(model, 1)
    with torch.no_grad():
        model.bias[0] = float("inf")
    with pytest.raises(NonFiniteError, match="non-finite weights after epoch 4.*bias"):
        check_finite_weights(model, 4)


def _train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "training.train", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(
    synthetic_lgg: Path, reference_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # Same thread count as the in-process reference so the arithmetic is identical.
    args = tiny_args(synthetic_lgg, out, "--set", f"training.num_threads={torch.get_num_threads()}")
    proc = subprocess.Popen(_train_command(*args), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "resume.pt").is_file() and proc.poll() is None:
        assert time.monotonic() < deadline, "no epoch completed in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # somewhere in epoch 2 (or just after it finished)
    proc.wait()
    resumed = subprocess.run(
        _train_command("--data-dir", str(synthetic_lgg), "--out", str(out), "--resume"),
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert weights_digest(out / "last.safetensors") == weights_digest(
        reference_run / "last.safetensors"
    )
    assert metric_rows(out) == metric_rows(reference_run)


@pytest.mark.slow
def test_ddp_two_processes_end_with_identical_replicas(
    synthetic_lgg: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    # uniform shuffling: the stock DistributedSampler path
    args = tiny_args(synthetic_lgg, out, "--epochs", "1", "--set", "data.tumour_sampling=null")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "training.train", *args],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model, loaded = load_checkpoint(out / "last.safetensors")
    card = loaded.to_json()  # "distributed" is a section the card type keeps as stored
    hashes = card["distributed"]["replica_state_sha256"]
    assert card["distributed"]["world_size"] == 2 and len(hashes) == 2
    # Both ranks' states equal the weights rank 0 saved.
    assert hashes[0] == hashes[1] == state_sha256(model)
    assert card["hardware"]["world_size"] == 2
    # One metrics row, written once (by rank 0 only).
    assert [r["epoch"] for r in metric_rows(out)] == ["1"]
    assert result.stdout.count("finished: epoch 1/1") == 1
