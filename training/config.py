"""The one training configuration: a YAML file per experiment, ``LGGSEG_`` env vars, CLI flags.

Precedence, lowest to highest: code defaults < YAML file < environment < command line.
Environment variables use the prefix ``LGGSEG_`` and ``__`` between nested names, e.g.
``LGGSEG_TRAINING__EPOCHS=3`` or ``LGGSEG_OPTIMIZER__BETAS='[0.9, 0.99]'`` (JSON for lists).
The resolved configuration is written to ``RUN_DIR/config.yaml`` and into every checkpoint card.

This module is the only place in training/ that reads the environment (through
pydantic-settings), including the ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set by torchrun.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from data.atomic import atomic_write_bytes
from data.preprocessing import PreprocessingConfig
from models.network import ModelConfig
from models.optimizers import OPTIMIZER_NAMES

ENV_PREFIX = "LGGSEG_"
ENV_NESTED_DELIMITER = "__"


class ConfigError(ValueError):
    """A configuration value (from YAML, environment or CLI) is missing or invalid."""


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

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class DistributedEnv(BaseSettings):
    """What torchrun tells each process (no prefix: these are torchrun's own names)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)

    RANK: int = 0
    WORLD_SIZE: int = 1
    LOCAL_RANK: int = 0


class _DictSource(PydanticBaseSettingsSource):
    """A settings source holding a fixed nested dict (the parsed YAML file)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


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
    file_values = read_yaml(yaml_path) if yaml_path is not None else {}

    class _Layered(TrainConfig):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, _DictSource(settings_cls, file_values)

    try:
        layered = _Layered(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, yaml_path)) from exc
    # Re-validate as the plain root class so the result pickles and prints as TrainConfig.
    return TrainConfig.model_construct(**dict(layered))


def _describe(exc: ValidationError, yaml_path: str | Path | None) -> str:
    where = f"{yaml_path}, " if yaml_path is not None else ""
    lines = [f"invalid training configuration (from {where}{ENV_PREFIX}* env vars, CLI flags):"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(root)"
        env = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p) for p in err["loc"]).upper()
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  - {loc}: {err['msg']}{shown}  [YAML {loc} / env {env}]")
    return "\n".join(lines)


def write_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write_bytes(path, text.encode())

