"""The command line of ``python -m training.train``: the few flags people type every day.

Every configuration value has one way in from the command line, ``--set KEY=VALUE`` with a
dotted KEY (``--set optimizer.lr=3e-4 --set data.patch_size=160``); ``--data-dir`` and
``--epochs`` are short forms of the two values changed most often. ``--show-config`` prints the
resolved configuration, that is every KEY there is. ``training.compare`` shares these flags.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from training.config import ENV_NESTED_DELIMITER, ENV_PREFIX, ConfigError

EXAMPLES = f"""\
examples:
  python -m training.train --config configs/default.yaml --data-dir DIR --out runs/znorm
  python -m training.train --config configs/default.yaml --data-dir DIR --out runs/try \\
      --set optimizer.lr=3e-4 --set data.patch_size=160 --set training.device=cpu
  python -m training.train --out runs/znorm --resume                # continue a stopped run
  python -m training.train --out runs/znorm --resume --epochs 80 --warm-restart
  python -m training.train --config configs/default.yaml --show-config   # every KEY
  torchrun --nproc_per_node 2 -m training.train --config configs/default.yaml --data-dir DIR \\
      --out runs/ddp

configuration: code defaults < --config YAML < {ENV_PREFIX}SECTION{ENV_NESTED_DELIMITER}KEY \
environment variables
(e.g. {ENV_PREFIX}TRAINING{ENV_NESTED_DELIMITER}EPOCHS=3) < --data-dir, --epochs and --set.
--show-config prints the result as YAML: each key in it can be set in the YAML file, as
an environment variable or with --set SECTION.KEY=VALUE.

writes RUN_DIR/config.yaml, split.json, metrics.csv, learning_curves.png, tb/,
best.safetensors and last.safetensors (+ .json model cards) and resume.pt.

exit codes: 0 success, 1 error, 2 bad configuration, 3 non-finite loss."""


class _ValueLoader(yaml.SafeLoader):
    """YAML, except that ``3e-4`` is a number (PyYAML's YAML 1.1 rules read it as text)."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--data-dir``, ``--epochs`` and ``--set``: the configuration flags."""
    parser.add_argument("--config", type=Path, metavar="FILE.yaml",
                        help="experiment YAML file (e.g. configs/default.yaml)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="kaggle_3m folder (TCGA_* patient folders); short for "
                             "--set data.data_dir=DIR")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help="number of epochs; short for --set training.epochs=N")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any configuration value, KEY dotted (optimizer.lr=3e-4, "
                             "data.patch_size=160, optimizer.options.znorm_eps=1e-6), VALUE "
                             "read as YAML (optimizer.betas=[0.9,0.99], "
                             "data.tumour_sampling=null); repeatable, the last one wins")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train the LGG ResNet-50-UNet on a kaggle_3m folder.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, metavar="RUN_DIR",
                        help="run folder for checkpoints, logs and the resolved config "
                             "(required, except with --show-config)")
    add_config_arguments(parser)
    parser.add_argument("--show-config", action="store_true",
                        help="print the resolved configuration (every KEY --set accepts) as "
                             "YAML and exit")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR from its last completed epoch (resume.pt) with "
                             "RUN_DIR/config.yaml; --set may change only data.data_dir, "
                             "data.num_workers, training.early_stopping_patience, "
                             "training.device, training.num_threads and "
                             "training.val_batch_size; the LR schedule (training.epochs, "
                             "training.warmup_epochs, optimizer.lr, training.min_lr_factor) "
                             "stays as it was, so the result equals an uninterrupted run, unless "
                             "--warm-restart is given")
    parser.add_argument("--warm-restart", action="store_true",
                        help="with --resume: train on from the last completed epoch with a new "
                             "LR schedule, keeping the weights and optimizer state: a linear "
                             "warm-up of training.warmup_epochs (0 for none), then cosine from "
                             "optimizer.lr down to lr x training.min_lr_factor at the end of "
                             "--epochs; recorded in the model card under "
                             "schedule.warm_restarts")
    parser.add_argument("--stop-after-epochs", type=int, metavar="N",
                        help="stop cleanly after N epochs in this invocation (e.g. for job time "
                             "limits); continue later with --resume")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration values given on the command line, nested by section."""
    pairs: list[tuple[str, Any]] = []
    if args.data_dir is not None:
        pairs.append(("data.data_dir", str(args.data_dir)))
    if args.epochs is not None:
        pairs.append(("training.epochs", args.epochs))
    pairs += [parse_set(item) for item in args.set]
    return nest(pairs)


def parse_set(item: str) -> tuple[str, Any]:
    """``"optimizer.lr=3e-4"`` -> ``("optimizer.lr", 0.0003)``: the VALUE is read as YAML."""
    key, sep, raw = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set expects SECTION.KEY=VALUE (e.g. optimizer.lr=3e-4), got "
                          f"{item!r}; --show-config lists the keys")
    try:
        return ".".join(parts), yaml.load(raw, Loader=_ValueLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: VALUE is not valid YAML ({exc})") from exc


def nest(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Dotted keys -> nested dicts, later pairs winning: ``{"optimizer": {"lr": 0.0003}}``."""
    nested: dict[str, Any] = {}
    for key, value in pairs:
        *parents, last = key.split(".")
        level = nested
        for part in parents:
            if not isinstance(level.get(part), dict):
                level[part] = {}
            level = level[part]
        level[last] = value
    return nested
