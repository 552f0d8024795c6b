"""The training configuration: precedence YAML < env < CLI, clear errors, the written file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.cli import build_parser, overrides_from_args
from training.config import (
    ConfigError,
    ScheduleChangeError,
    TrainConfig,
    load_config,
    resolve_config,
    write_config,
)
from training.train import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LGGSEG_* settings from the caller's shell leak into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("LGGSEG_") and name != "LGGSEG_TEST_DATA_DIR":
            monkeypatch.delenv(name)


def write_yaml(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def cli(*argv: str) -> dict:
    return overrides_from_args(build_parser().parse_args(["--out", "x", *argv]))


def test_precedence_defaults_yaml_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "exp.yaml", {
        "training": {"epochs": 5, "batch_size": 3},
        "optimizer": {"lr": 0.01, "name": "adam"},
        "model": {"backbone": "resnet34"},
    })
    monkeypatch.setenv("LGGSEG_TRAINING__EPOCHS", "7")
    monkeypatch.setenv("LGGSEG_OPTIMIZER__LR", "0.02")
    monkeypatch.setenv("LGGSEG_OPTIMIZER__BETAS", "[0.8, 0.9]")
    cfg = load_config(path, cli("--epochs", "9", "--set", "preprocessing.image_size=128",
                                "--set", "optimizer.name=adamw"))
    assert cfg.training.epochs == 9  # CLI beats env and YAML
    assert cfg.optimizer.lr == 0.02  # env beats YAML
    assert cfg.optimizer.betas == (0.8, 0.9)  # env, JSON list
    assert cfg.optimizer.name == "adamw"  # --set beats YAML
    assert cfg.training.batch_size == 3  # YAML
    assert cfg.model.backbone == "resnet34"  # YAML, in the shared ModelConfig
    assert cfg.preprocessing.image_size == 128  # CLI, in the shared PreprocessingConfig
    assert cfg.training.seed == 0 and cfg.training.amp == "auto"  # defaults


def test_set_flag_reaches_any_value() -> None:
    cfg = load_config(None, cli("--set", "optimizer.options={znorm_eps: 1.0e-6}",
                                "--set", "training.min_lr_factor=0.1",
                                "--set", "optimizer.lr=3e-4", "--set", "data.patch_size=160",
                                "--set", "optimizer.betas=[0.9,0.99]"))
    assert cfg.optimizer.options == {"znorm_eps": 1e-6}
    assert cfg.training.min_lr_factor == 0.1 and cfg.data.patch_size == 160
    assert cfg.optimizer.betas == (0.9, 0.99)
    assert cfg.optimizer.build_kwargs() == {"lr": 3e-4, "znorm_eps": 1e-6, "betas": (0.9, 0.99)}
    # A key deeper than SECTION.KEY, and the last of two values for one key wins.
    deep = cli("--set", "optimizer.options.znorm_eps=1e-6",
               "--set", "optimizer.options.max_grad_norm=2",
               "--set", "training.epochs=4", "--epochs", "3")
    assert deep == {"optimizer": {"options": {"znorm_eps": 1e-6, "max_grad_norm": 2}},
                    "training": {"epochs": 4}}
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        cli("--set", "epochs=3")
    with pytest.raises(ConfigError, match="training.epochs: Input should be a valid integer.*"
                                          "--set training.epochs="):
        load_config(None, cli("--set", "training.epochs=many"))
    with pytest.raises(ConfigError, match="training.epoch: Extra inputs are not permitted"):
        load_config(None, cli("--set", "training.epoch=3"))


def test_show_config_prints_every_key_resolved(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LGGSEG_TRAINING__SEED", "7")
    assert main(["--config", str(REPO / "configs" / "smoke.yaml"), "--show-config",
                 "--set", "optimizer.lr=3e-4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == load_config(REPO / "configs" / "smoke.yaml",
                                {"optimizer": {"lr": 3e-4}}).to_dict()
    assert shown["optimizer"]["lr"] == 3e-4 and shown["training"]["seed"] == 7
    assert shown["model"]["backbone"] == "resnet18"  # the YAML's
    assert list(shown) == ["data", "preprocessing", "model", "optimizer", "training"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"training": {"epochs": 0}}, "training.epochs: Input should be greater than or equal"),
        ({"trainng": {"epochs": 3}}, "trainng: Extra inputs are not permitted"),
        ({"training": {"amp": "fp16"}}, "training.amp: Input should be 'bf16', 'fp32' or 'auto'"),
        ({"optimizer": {"name": "lion"}}, "unknown optimizer 'lion'; choose one of"),
        ({"preprocessing": {"image_size": 100}}, "preprocessing.image_size: Input should be a "
                                                 "multiple of 32"),
        ({"data": {"split_fractions": [0.5, 0.5, 0.5]}}, "sum to 1"),
        ({"data": {"patch_size": 100}}, "data.patch_size: Input should be a multiple of 32"),
        ({"data": {"patch_size": 512}}, "data.patch_size=512 is larger than "
                                        "preprocessing.image_size=256"),
    ],
)
def test_bad_yaml_values_give_clear_errors(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path / "bad.yaml", values))
    assert message in str(info.value)
    assert str(tmp_path / "bad.yaml") in str(info.value)


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGGSEG_TRAINING__BATCH_SIZE", "many")
    with pytest.raises(ConfigError, match="LGGSEG_TRAINING__BATCH_SIZE"):
        load_config(None)


def test_missing_or_malformed_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_resolved_config_round_trips_through_yaml(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGGSEG_DATA__LIMIT_PATIENTS", "12")
    cfg = load_config(REPO / "configs" / "smoke.yaml", cli("--set", "optimizer.lr=0.005"))
    write_config(cfg, tmp_path / "config.yaml")
    monkeypatch.delenv("LGGSEG_DATA__LIMIT_PATIENTS")
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["data"]["limit_patients"] == 12 and written["optimizer"]["lr"] == 0.005
    assert load_config(tmp_path / "config.yaml") == cfg
    assert isinstance(cfg, TrainConfig)


def test_shipped_configs_are_valid() -> None:
    default = load_config(REPO / "configs" / "default.yaml")
    assert default.preprocessing.image_size == 256 and default.model.backbone == "resnet50"
    assert default.optimizer.name == "znorm-adam"
    smoke = load_config(REPO / "configs" / "smoke.yaml")
    assert smoke.model.backbone == "resnet18" and smoke.preprocessing.image_size == 64


def test_main_reports_config_errors_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--out", str(tmp_path / "run"), "--data-dir", str(tmp_path), "--epochs", "0"])
    assert code == 2
    assert "training.epochs" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "run")]) == 2
    assert "no data folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse's own exit code for usage errors
        main(["--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--out RUN_DIR is required" in capsys.readouterr().err


def test_help_shows_examples_and_how_to_list_the_keys(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--set optimizer.lr=3e-4 --set data.patch_size=160" in text
    assert "--show-config" in text and "LGGSEG_TRAINING__EPOCHS=3" in text
    flags = {a.option_strings[-1] for a in build_parser()._actions if a.option_strings}
    assert flags == {"--help", "--out", "--config", "--data-dir", "--epochs", "--set",
                     "--show-config", "--resume", "--warm-restart", "--stop-after-epochs"}


def test_resume_uses_the_run_config_and_allows_only_safe_changes(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "smoke.yaml", {"data": {"data_dir": str(tmp_path)}})
    write_config(cfg, tmp_path / "config.yaml")
    patience = {"training": {"early_stopping_patience": 3}}
    resumed = resolve_config(tmp_path, None, patience, resume=True)
    assert resumed.training.early_stopping_patience == 3 and resumed.model == cfg.model
    # The schedule changes only with an explicit warm restart.
    with pytest.raises(ScheduleChangeError, match="cannot change training.epochs"):
        resolve_config(tmp_path, None, {"training": {"epochs": 5}}, resume=True)
    restarted = resolve_config(tmp_path, None, {"training": {"epochs": 5}, "optimizer":
                               {"lr": 1e-4}}, resume=True, warm_restart=True)
    assert restarted.training.epochs == 5 and restarted.optimizer.lr == 1e-4
    with pytest.raises(ConfigError, match="use it with --resume"):
        resolve_config(tmp_path, None, {}, resume=False, warm_restart=True)
    with pytest.raises(ConfigError, match="cannot change model.backbone"):
        resolve_config(tmp_path, None, {"model": {"backbone": "resnet50"}}, resume=True)
    with pytest.raises(ConfigError, match="do not pass --config"):
        resolve_config(tmp_path, REPO / "configs" / "smoke.yaml", {}, resume=True)
