"""The one training configuration: its schema, its sources and the rules of a resumed run.

Sources, lowest to highest: code defaults < the experiment's YAML file (``--config``) <
``LGGSEG_*`` environment variables < the command line (``training.cli``: ``--data-dir``,
``--epochs`` and ``--set KEY=VALUE``). Environment variables use ``__`` between nested names,
e.g. ``LGGSEG_TRAINING__EPOCHS=3`` or ``LGGSEG_OPTIMIZER__BETAS='[0.9, 0.99]'`` (JSON for lists).
pydantic-settings reads and layers the sources; ``python -m training.train --show-config`` prints
the result. The resolved configuration is written to ``RUN_DIR/config.yaml`` and into every
checkpoint card.

``--resume`` takes the configuration from ``RUN_DIR/config.yaml`` (``resolve_config``) and keeps
the run's learning-rate schedule unless ``--warm-restart`` asks for a new one
(``resumed_schedule``), so that a resumed run equals an uninterrupted one.

This module is the only place in training/ that reads the environment (through
pydantic-settings), including the ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set by torchrun.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from data.atomic import atomic_write_bytes
from data.preprocessing import PreprocessingConfig
from models.network import ModelConfig
from models.optimizers import OPTIMIZER_NAMES
from training.schedule import SCHEDULE_KEYS, CosineSchedule

if TYPE_CHECKING:
    from training.checkpointing import Progress

logger = logging.getLogger(__name__)

ENV_PREFIX = "LGGSEG_"
ENV_NESTED_DELIMITER = "__"


class ConfigError(ValueError):
    """A configuration value (from YAML, environment or CLI) is missing or invalid."""


class ScheduleChangeError(ConfigError):
    """``--resume`` would change the learning-rate schedule without ``--warm-restart``."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """Where the slices come from and how they are split and sampled."""

    data_dir: Path | None = None
    limit_patients: int | None = Field(None, ge=3)
    cache: bool = True
    tumour_sampling: float | None = Field(None, gt=0.0, lt=1.0)
    num_workers: int = Field(2, ge=0)
    skip_bad: bool = False
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    augmentation: Literal["none", "light", "default", "strong"] = "default"
    patch_size: int | None = Field(None, ge=32, multiple_of=32)
    patch_foreground: float = Field(0.67, ge=0.0, le=1.0)
    train_on_val: bool = False
    """Final fit: train on the train and validation patients with a recipe already fixed on
    validation. Validation figures are then in-sample (the loop still prints them as a curve);
    the test patients stay held out, and ``training.release --run`` takes the last epoch."""

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"train/val/test fractions must be >= 0 and sum to 1, got {value}")
        if value[0] == 0 or value[1] == 0:
            raise ValueError(f"train and val fractions must be > 0, got {value}")
        return value


class OptimizerConfig(_Section):
    """Passed to ``models.optimizers.build_optimizer(name, params, lr=..., ...)``.

    ``weight_decay`` and ``betas`` left at null use the optimizer's own default (e.g. 1e-2 for
    AdamW); ``options`` holds the rest, e.g. ``znorm_eps``, ``znorm_per_channel``,
    ``znorm_include_1d``, ``max_grad_norm`` (clip-adam) or ``momentum`` (znorm-sgd).
    """

    name: str = "znorm-adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float | None = Field(None, ge=0.0)
    betas: tuple[float, float] | None = None
    options: dict[str, float | int | bool | str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_name(cls, value: str) -> str:
        if value not in OPTIMIZER_NAMES:
            raise ValueError(f"unknown optimizer {value!r}; choose one of {list(OPTIMIZER_NAMES)}")
        return value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must lie in [0, 1), got {value}")
        return value

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_optimizer`` (besides name and params)."""
        kwargs: dict[str, Any] = {"lr": self.lr, **self.options}
        if self.weight_decay is not None:
            kwargs["weight_decay"] = self.weight_decay
        if self.betas is not None:
            kwargs["betas"] = tuple(self.betas)
        return kwargs


class TrainingConfig(_Section):
    """The loop: length, batch, precision, device, schedule, stopping."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)
    val_batch_size: int = Field(32, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    warmup_epochs: float = Field(1.0, ge=0.0)
    min_lr_factor: float = Field(0.01, ge=0.0, le=1.0)
    early_stopping_patience: int = Field(10, ge=0)
    val_every: int = Field(1, ge=1)
    amp: Literal["bf16", "fp32", "auto"] = "auto"
    channels_last: bool = True
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1)


class TrainConfig(BaseSettings):
    """The root of the training configuration (see the module docstring for precedence)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    data: DataConfig = Field(default_factory=DataConfig)
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        patch = self.data.patch_size
        if patch is not None and patch > self.preprocessing.image_size:
            raise ValueError(
                f"data.patch_size={patch} is larger than preprocessing.image_size="
                f"{self.preprocessing.image_size}"
            )
        if self.model.in_channels != len(self.preprocessing.channels):
            raise ValueError(
                f"model.in_channels={self.model.in_channels} but preprocessing gives "
                f"{len(self.preprocessing.channels)} channels"
            )
        if self.data.train_on_val and self.training.early_stopping_patience:
            raise ValueError(
                "data.train_on_val trains on the validation patients, so their Dice cannot "
                "stop the run: set training.early_stopping_patience to 0"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: keyword arguments (the command line), ``LGGSEG_*``, the YAML file
        named by ``model_config["yaml_file"]`` (see ``load_config``); then the defaults."""
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class DistributedEnv(BaseSettings):
    """What torchrun tells each process (no prefix: these are torchrun's own names)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)

    RANK: int = 0
    WORLD_SIZE: int = 1
    LOCAL_RANK: int = 0


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse an experiment file; raises ConfigError when it is missing or not a mapping."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {values!r}")
    return values


def load_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Resolve the configuration: defaults < YAML < ``LGGSEG_*`` env vars < ``overrides`` (CLI).

    ``overrides`` is nested like the YAML file, e.g. ``{"training": {"epochs": 3}}``.
    Raises ConfigError naming every bad value and where values come from.
    """
    if yaml_path is not None:
        read_yaml(yaml_path)  # a missing, malformed or non-mapping file: a clear ConfigError

    class Experiment(TrainConfig):
        model_config = SettingsConfigDict(yaml_file=yaml_path)

    try:
        resolved = Experiment(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, yaml_path)) from exc
    # The same values as the root class, so the result pickles, prints and compares as one.
    return TrainConfig.model_construct(**dict(resolved))


def _describe(exc: ValidationError, yaml_path: str | Path | None) -> str:
    where = f"{yaml_path}, " if yaml_path is not None else ""
    lines = [f"invalid training configuration (from {where}{ENV_PREFIX}* env vars, --set):"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(root)"
        env = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p) for p in err["loc"]).upper()
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  - {loc}: {err['msg']}{shown}  [YAML {loc} / env {env} / --set {loc}=]")
    return "\n".join(lines)


def write_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    atomic_write_bytes(path, config_yaml(cfg).encode())


def config_yaml(cfg: TrainConfig) -> str:
    """The configuration as YAML, sections and keys in schema order (``--show-config``)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------- resumed runs

# Values a resumed run may change; anything else would make it a different experiment. The
# schedule (SCHEDULE_KEYS) may change only with --warm-restart.
RESUMABLE_CHANGES = {
    "data.data_dir",
    "data.num_workers",
    "training.early_stopping_patience",
    "training.device",
    "training.num_threads",
    "training.val_batch_size",
}


def resolve_config(
    run_dir: Path,
    config_file: Path | None,
    overrides: dict[str, Any],
    *,
    resume: bool,
    warm_restart: bool = False,
) -> TrainConfig:
    """A fresh run layers YAML < env < command line; ``--resume`` starts from
    RUN_DIR/config.yaml instead and may change the schedule only with ``warm_restart``."""
    if warm_restart and not resume:
        raise ConfigError("--warm-restart continues a run: use it with --resume")
    if not resume:
        return load_config(config_file, overrides)
    saved_path = run_dir / "config.yaml"
    if config_file is not None:
        raise ConfigError("--resume takes the configuration from RUN_DIR/config.yaml; "
                          "do not pass --config")
    if not saved_path.is_file():
        raise ConfigError(f"--resume: {saved_path} not found (is {run_dir} a run folder?)")
    cfg = load_config(saved_path, overrides)
    saved = read_yaml(saved_path)
    changed = _changed_keys(saved, cfg.to_dict()) - RESUMABLE_CHANGES
    schedule_changes = changed & set(SCHEDULE_KEYS)
    changed -= set(SCHEDULE_KEYS)
    if changed:
        raise ConfigError(f"--resume cannot change {', '.join(sorted(changed))}; "
                          "start a new run folder instead")
    if schedule_changes and not warm_restart:
        was, asked = CosineSchedule.from_config(saved), CosineSchedule.from_config(cfg)
        raise ScheduleChangeError(
            f"--resume cannot change {', '.join(sorted(schedule_changes))} of a run: its "
            f"learning-rate schedule ({was.describe()}) would be re-stretched to "
            f"{asked.describe()} mid-run: the LR would jump to wherever the new curve stands at "
            "this step, and the run would no longer equal an uninterrupted one. To continue the "
            "run, resume without changing these values. To train on from its last epoch with a "
            "new warm-up + cosine over the remaining epochs, add --warm-restart (recorded in the "
            "model card). Or start a new run folder."
        )
    return cfg


def resumed_schedule(cfg: TrainConfig, progress: Progress, *, warm_restart: bool
                     ) -> CosineSchedule:
    """The schedule a resumed run follows: the one in force in resume.pt, or with
    ``warm_restart`` a new one from ``cfg`` starting after the last completed epoch (appended to
    ``progress.warm_restarts``). Raises ScheduleChangeError for a changed schedule without
    ``warm_restart`` (e.g. config.yaml from a --warm-restart that stopped before its first
    epoch completed) and for a warm restart with no epochs left."""
    asked = CosineSchedule.from_config(cfg)
    if not progress.schedule and not warm_restart:
        # resume.pt written before schedules were recorded: the configuration's, which
        # resolve_config compared with RUN_DIR/config.yaml.
        progress.schedule = asked.to_dict()
    in_force = [CosineSchedule(**s) for s in [progress.schedule, *progress.warm_restarts] if s]
    current = in_force[-1] if in_force else asked
    if not warm_restart:
        if not current.same_curve(asked):
            raise ScheduleChangeError(
                f"resume.pt continues the schedule {current.describe()}, but the configuration "
                f"asks for {asked.describe()}: resume with resume.pt's values ("
                f"{', '.join(SCHEDULE_KEYS)}), or add --warm-restart to start a new schedule "
                "from the last completed epoch"
            )
        return current
    if cfg.training.epochs <= progress.epoch:
        raise ScheduleChangeError(
            f"--warm-restart: the run has completed {progress.epoch} epoch(s) already; pass "
            f"--epochs above {progress.epoch} for the new schedule to train"
        )
    restart = CosineSchedule.from_config(cfg, after_epoch=progress.epoch, at_step=progress.step)
    progress.warm_restarts.append(restart.to_dict())
    logger.info("warm restart after epoch %d (step %d): %s", progress.epoch, progress.step,
                restart.describe())
    return restart


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys |= _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b and not (isinstance(a, list | tuple) and list(a) == list(b or [])):
            keys.add(f"{prefix}{key}")
    return keys
