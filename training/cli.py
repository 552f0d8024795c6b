"""Command-line flags of ``python -m training.train`` and how they map onto the configuration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from training.config import ENV_NESTED_DELIMITER, ENV_PREFIX, ConfigError

# flag destination -> (section, key) in the configuration
FLAG_TO_CONFIG: dict[str, tuple[str, str]] = {
    "data_dir": ("data", "data_dir"),
    "limit_patients": ("data", "limit_patients"),
    "num_workers": ("data", "num_workers"),
    "tumour_sampling": ("data", "tumour_sampling"),
    "cache": ("data", "cache"),
    "augmentation": ("data", "augmentation"),
    "split_seed": ("data", "split_seed"),
    "patch_size": ("data", "patch_size"),
    "image_size": ("preprocessing", "image_size"),
    "backbone": ("model", "backbone"),
    "optimizer": ("optimizer", "name"),
    "lr": ("optimizer", "lr"),
    "weight_decay": ("optimizer", "weight_decay"),
    "epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "grad_accumulation": ("training", "grad_accumulation"),
    "warmup_epochs": ("training", "warmup_epochs"),
    "patience": ("training", "early_stopping_patience"),
    "val_every": ("training", "val_every"),
    "amp": ("training", "amp"),
    "channels_last": ("training", "channels_last"),
    "seed": ("training", "seed"),
    "device": ("training", "device"),
    "num_threads": ("training", "num_threads"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=(
            "Train the LGG ResNet-50-UNet on a kaggle_3m folder. Configuration precedence: "
            f"defaults < --config YAML < {ENV_PREFIX}* env vars (e.g. "
            f"{ENV_PREFIX}TRAINING{ENV_NESTED_DELIMITER}EPOCHS=3) < these flags. "
            "Writes RUN_DIR/config.yaml, split.json, metrics.csv, tb/, best.safetensors, "
            "last.safetensors (+ .json model cards) and resume.pt. "
            "Multi-process: torchrun --nproc_per_node N -m training.train ..."
        ),
        epilog="Exit codes: 0 success, 1 error, 2 bad configuration, 3 non-finite loss.",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, required=True, metavar="RUN_DIR",
                     help="run folder for checkpoints, logs and the resolved config")
    run.add_argument("--config", type=Path, metavar="FILE.yaml",
                     help="experiment YAML file (e.g. configs/default.yaml)")
    run.add_argument("--resume", action="store_true",
                     help="continue RUN_DIR from its last completed epoch (resume.pt); the "
                          "configuration comes from RUN_DIR/config.yaml, flags may change only "
                          "patience, device, threads, workers and the data folder; the LR "
                          "schedule (--epochs, --warmup-epochs, --lr, training.min_lr_factor) "
                          "stays as it was, so the result equals an uninterrupted run, unless "
                          "--warm-restart is given")
    run.add_argument("--warm-restart", action="store_true",
                     help="with --resume: train on from the last completed epoch with a new "
                          "LR schedule, keeping the weights and optimizer state: a linear "
                          "warm-up of the run's warmup_epochs (or --warmup-epochs; 0 for none), "
                          "then cosine from the run's lr (or --lr) down to lr x min_lr_factor "
                          "at the end of --epochs; recorded in the model card under "
                          "schedule.warm_restarts")
    run.add_argument("--stop-after-epochs", type=int, metavar="N",
                     help="stop cleanly after N epochs in this invocation (e.g. for job time "
                          "limits); continue later with --resume")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override any configuration value, VALUE parsed as YAML "
                          "(repeatable), e.g. --set optimizer.betas=[0.9,0.99]")

    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, metavar="DIR",
                      help="kaggle_3m folder (TCGA_* patient folders)")
    data.add_argument("--limit-patients", type=int, metavar="K",
                      help="use only K patients (evenly spaced over the sorted ids; debug runs)")
    data.add_argument("--num-workers", type=int, metavar="N", help="DataLoader worker processes")
    data.add_argument("--tumour-sampling", type=float, metavar="SHARE",
                      help="draw training slices so that SHARE of them show tumour (0-1)")
    data.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                      help="decode all slices into memory once (default: on)")
    data.add_argument("--augmentation", choices=["none", "light", "default", "strong"],
                      help="training augmentation strength")
    data.add_argument("--split-seed", type=int, help="seed of the patient-level split")
    data.add_argument("--patch-size", type=int, metavar="P",
                      help="train on P x P crops of the preprocessed slices, biased toward "
                           "tumour (multiple of 32; validation stays on whole slices)")

    model = parser.add_argument_group("model and preprocessing")
    model.add_argument("--image-size", type=int, metavar="S",
                       help="model input side in pixels (multiple of 32)")
    model.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50"],
                       help="UNet encoder")

    opt = parser.add_argument_group("optimizer")
    opt.add_argument("--optimizer", metavar="NAME",
                     help="adam, adamw, gc-adam, clip-adam, znorm-adam, znorm-adamw, znorm-sgd")
    opt.add_argument("--lr", type=float, help="peak learning rate (after warm-up)")
    opt.add_argument("--weight-decay", type=float, help="weight decay")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, metavar="N", help="number of epochs")
    train.add_argument("--batch-size", type=int, metavar="B", help="slices per batch and rank")
    train.add_argument("--grad-accumulation", type=int, metavar="K",
                       help="batches per optimizer step")
    train.add_argument("--warmup-epochs", type=float, help="linear LR warm-up length in epochs")
    train.add_argument("--patience", type=int,
                       help="early stopping: validations without a better val mean patient "
                            "Dice before stopping (0 = never stop early)")
    train.add_argument("--val-every", type=int, metavar="N", help="validate every N epochs")
    train.add_argument("--amp", choices=["bf16", "fp32", "auto"],
                       help="bf16 autocast, fp32, or auto (bf16 where the device supports it)")
    train.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels-last memory format for model and inputs")
    train.add_argument("--seed", type=int, help="seed for initialisation, sampling, augmentation")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"],
                       help="where to train (auto: CUDA when available)")
    train.add_argument("--num-threads", type=int, metavar="N", help="torch CPU threads")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration values given on the command line, nested by section."""
    nested: dict[str, dict[str, Any]] = {}
    for dest, (section, key) in FLAG_TO_CONFIG.items():
        value = getattr(args, dest)
        if value is not None:
            nested.setdefault(section, {})[key] = str(value) if isinstance(value, Path) else value
    for item in args.set:
        path, sep, raw = item.partition("=")
        parts = path.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: VALUE is not valid YAML ({exc})") from exc
        nested.setdefault(parts[0], {})[parts[1]] = value
    return nested
