"""The model card: one typed description of a checkpoint, shared by everything that reads one.

A card (``run/best.json`` beside ``run/best.safetensors``) says how to rebuild the network
(``model``) and its input (``preprocessing``), and where the weights come from (config, split,
metrics, versions, hardware, wall time, intended use), in the spirit of a MONAI bundle's
``metadata.json``. Checkpoint I/O, training, the release, the Predictor, the API's
``/v1/model`` and the viewer all pass a :class:`ModelCard`, never a loose dict.

A card dumps exactly what it holds (:meth:`ModelCard.to_json`): fields it was not given stay
absent instead of appearing as ``null``, so a stored card loads and is written back unchanged.
Unknown fields (written by an older or newer version: ``distributed``, a retired key) are kept
as they are (``model_extra``) and written back, never dropped or refused: a card is provenance,
and losing a line of it on a rescore would rewrite history. Code reads only the typed fields.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from data.preprocessing import PreprocessingConfig
from data.split import PARTS, Split
from models.network import ModelConfig

FORMAT: Final = "lggseg-checkpoint/1"
INTENDED_USE = "research, not for diagnostic use"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, tampered with or for another architecture."""


class CardSection(BaseModel):
    """A part of the card: unknown keys are kept, and it dumps only the keys it was given, in
    the order it was given them (so a stored card is written back as it was)."""

    model_config = ConfigDict(extra="allow")
    _always: ClassVar[tuple[str, ...]] = ()
    """Fields dumped even when left at their default, first."""
    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        section = handler(data)
        if isinstance(data, dict) and isinstance(section, CardSection):
            section._order = list(data)
        return section

    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data: dict[str, Any] = handler(self)
        given = self.model_fields_set | set(self.model_extra or {}) | set(self._always)
        rank = {key: i for i, key in enumerate(self._order)}
        rank.update((key, -1) for key in self._always if key not in rank)
        keys = sorted((k for k in data if k in given), key=lambda k: rank.get(k, len(rank)))
        return {key: data[key] for key in keys}


class SplitSection(CardSection):
    """The patient split the model was trained, tuned and tested on (``data.split.Split``)."""

    format: str = "lggseg-split/1"
    seed: int
    fractions: tuple[float, float, float]
    train: list[str]
    val: list[str]
    test: list[str]

    def to_split(self) -> Split:
        return Split.from_dict(self.model_dump(mode="json"))

    def part_of(self, patient_id: str) -> str | None:
        """``"train"``, ``"val"`` or ``"test"`` when the split lists this patient, else None."""
        return next((part for part in PARTS if patient_id in getattr(self, part)), None)


class ScoredWith(CardSection):
    """How the released file was scored (``training.release``)."""

    model: str | None = None
    precision: str | None = None
    tta: bool | None = None
    threshold: float | None = None
    cpu: str | None = None


class Metrics(CardSection):
    """Figures of the model. The per-part statistics (``val_mean_patient_dice``,
    ``test_patient_dice``, ...) are kept as they come; the keys code reads are typed."""

    best_epoch: int | None = None
    best_val_mean_patient_dice: float | None = None
    val_in_sample: bool | None = None
    convention: str | None = None
    std: str | None = None
    scored_with: ScoredWith | None = None

    def numbers(self) -> dict[str, float | int]:
        """The scalar figures, in stored order (booleans and nested entries left out)."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}


class ModelCard(CardSection):
    """Everything stored beside a checkpoint's weights; see the module docstring. Fields are
    declared in the order a release card stores them."""

    _always = ("format",)

    format: Literal["lggseg-checkpoint/1"] = FORMAT
    model: ModelConfig
    preprocessing: PreprocessingConfig
    config: dict[str, Any] | None = Field(
        None, description="the resolved training configuration (training.config.TrainConfig)")
    split: SplitSection | None = None
    epoch: int | None = None
    step: int | None = None
    versions: dict[str, str] | None = None
    hardware: dict[str, Any] | None = None
    wall_time_s: float | None = None
    input: str | None = None
    output: str | None = None
    schedule: dict[str, Any] | None = None
    repairs: list[dict[str, Any]] | None = None
    name: str | None = None
    version: str | None = None
    data_source: str | None = None
    citation: list[str] | None = None
    intended_use: str | None = None
    metrics: Metrics | None = None
    training_metrics: dict[str, float] | None = None
    note: str | None = None
    weights_sha256: str | None = None

    @classmethod
    def from_json(cls, data: object, source: str = "the model card") -> Self:
        """Validate a card read from JSON; CheckpointError naming each bad field otherwise."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{source} is not a {FORMAT} model card")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CheckpointError(f"{source} is invalid: {describe_errors(exc)}") from exc

    def to_json(self) -> dict[str, Any]:
        """The card as stored: JSON types, only the fields it holds, unknown ones included."""
        return self.model_dump(mode="json")

    def with_updates(self, **fields: Any) -> Self:
        """A validated copy with ``fields`` replaced (or added)."""
        return type(self).from_json({**self.to_json(), **_as_json(fields)})

    @property
    def trained_on_val(self) -> bool:
        """Whether the model was trained on its split's validation patients too (a final fit,
        ``data.train_on_val``): its validation figures are then in-sample."""
        data = (self.config or {}).get("data")
        return bool(data.get("train_on_val", False)) if isinstance(data, dict) else False


def _as_json(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
            for k, v in fields.items()}


def describe_errors(exc: ValidationError) -> str:
    """``field.sub: message`` for each error, e.g. ``model.backbone: Input should be ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'card'}: {error['msg']}"
        for error in exc.errors()
    )
