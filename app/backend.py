"""Everything the viewer asks of ``inference``, behind one small interface.

``Segmenter`` has two implementations: ``LocalSegmenter`` runs the ``Predictor`` in this
process, ``ApiSegmenter`` calls a running API. Decoding of uploads and the metrics are the
``inference`` package's own; this module only adapts their errors and results for the page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tifffile

from app.client import ApiClient, ApiError
from data.preprocessing import ChannelError
from inference import decode, metrics, uncertainty
from inference.predictor import Predictor


class BadUpload(ValueError):
    """An uploaded file that cannot be used; the message is meant for the page."""


class BackendError(RuntimeError):
    """The model cannot be loaded or the API cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Segmentation:
    """The model's answer for one slice: binary mask (uint8 0/1, the slice's H x W)."""

    mask: np.ndarray
    max_probability: float


class Segmenter(Protocol):
    key: str
    """Identifies the model (and where it runs), so cached predictions of another are not reused."""
    description: str

    def card(self) -> dict[str, Any]: ...

    def segment(self, items: Sequence[tuple[bytes, np.ndarray]]) -> list[Segmentation]:
        """Segment slices given as (file bytes, decoded image) pairs."""
        ...

    def segment_volume(self, data: bytes, volume: np.ndarray) -> list[Segmentation]:
        """Segment every slice ``volume[:, :, k]`` of an uploaded volume (file bytes, decoded)."""
        ...

    def uncertainty(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
                    ) -> list[np.ndarray]:
        """Per slice, where the model's answer for the mirrored slice differs from ``masks``
        (``inference.uncertainty``), uint8 0/1."""
        ...


class LocalSegmenter:
    """The ``Predictor`` in this process."""

    def __init__(self, predictor: Predictor, checkpoint: Path) -> None:
        self.predictor = predictor
        self.key = f"local:{checkpoint}:{predictor.model_version}"
        self.description = f"model {predictor.model_version}, running in this process"

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", engine: str = "auto") -> LocalSegmenter:
        try:
            predictor = Predictor.from_checkpoint(checkpoint, device=device, engine=engine)
        except (OSError, ValueError, RuntimeError) as exc:  # CheckpointError is a RuntimeError
            raise BackendError(
                f"the model could not be loaded: {exc}. Set LGGSEG_CHECKPOINT to a checkpoint "
                "(.safetensors with its .json card beside it), or LGGSEG_API_URL to a running "
                "API (python -m inference.serve)."
            ) from exc
        return cls(predictor, checkpoint)

    def card(self) -> dict[str, Any]:
        return self.predictor.card.to_json()

    def segment(self, items: Sequence[tuple[bytes, np.ndarray]]) -> list[Segmentation]:
        try:
            results = self.predictor.predict_batch([image for _, image in items])
        except ChannelError as exc:  # app.uploads refuses these first; the message names them
            raise BackendError(str(exc)) from exc
        return [Segmentation(r.mask.astype(np.uint8), float(r.max_probability)) for r in results]

    def segment_volume(self, data: bytes, volume: np.ndarray) -> list[Segmentation]:
        try:
            prediction = self.predictor.predict_volume(volume)
        except ChannelError as exc:
            raise BackendError(str(exc)) from exc
        return [
            Segmentation(prediction.masks[:, :, s.index], float(s.max_probability))
            for s in prediction.slices
        ]

    def uncertainty(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
                    ) -> list[np.ndarray]:
        try:
            return uncertainty.flip_disagreement(self.predictor, images, masks)
        except ChannelError as exc:
            raise BackendError(str(exc)) from exc


class ApiSegmenter:
    """A running API; slices and volumes are sent as the uploaded bytes."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        try:
            version = client.ready()
            info = client.model_info()
        except ApiError as exc:
            raise BackendError(
                f"{exc}. Check that the API runs at the address in LGGSEG_API_URL (python -m "
                "inference.serve), or unset LGGSEG_API_URL to run the model in this process."
            ) from exc
        card = info.get("card")
        self._card = dict(card) if isinstance(card, dict) else {}
        self.key = f"api:{client.base_url}:{version}"
        self.description = f"model {version}, served by the API at {client.base_url}"

    def card(self) -> dict[str, Any]:
        return dict(self._card)

    def segment(self, items: Sequence[tuple[bytes, np.ndarray]]) -> list[Segmentation]:
        out = []
        for data, _ in items:
            try:
                answer = self.client.segment(data)
            except ApiError as exc:
                raise BackendError(str(exc)) from exc
            out.append(Segmentation(answer.mask, answer.max_probability))
        return out

    def segment_volume(self, data: bytes, volume: np.ndarray) -> list[Segmentation]:
        try:
            answer = self.client.segment_volume(data)
        except ApiError as exc:
            raise BackendError(str(exc)) from exc
        if answer.masks.shape != volume.shape[:3]:
            raise BackendError(f"the API answered masks of shape {answer.masks.shape} for a "
                               f"volume of shape {volume.shape[:3]}")
        return [Segmentation(answer.masks[:, :, k], p)
                for k, p in enumerate(answer.max_probabilities)]

    def uncertainty(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]
                    ) -> list[np.ndarray]:
        """The mirrored slices go to the API as TIFF (any pixel type, lossless)."""
        out = []
        for image, mask in zip(images, masks, strict=True):
            buffer = io.BytesIO()
            tifffile.imwrite(buffer, uncertainty.mirrored(image))
            try:
                answer = self.client.segment(buffer.getvalue())
            except ApiError as exc:
                raise BackendError(str(exc)) from exc
            out.append(uncertainty.disagreement(mask, answer.mask))
        return out


def decode_slice(data: bytes) -> np.ndarray:
    """Decode an uploaded PNG / JPEG / TIFF slice (the format is sniffed from the bytes)."""
    try:
        return decode.decode_slice(data)
    except decode.WrongKind as exc:
        raise BadUpload(f'{exc}; choose "Upload a NIfTI volume" for volumes') from exc
    except decode.DecodeProblem as exc:
        raise BadUpload(str(exc)) from exc


def decode_volume(data: bytes) -> decode.Volume:
    """Decode an uploaded NIfTI volume (``.nii`` / ``.nii.gz``): ``H x W x Z [x C]`` + affine."""
    try:
        return decode.decode_volume(data)
    except decode.WrongKind as exc:
        raise BadUpload(f'{exc}; choose "Upload slices" for single slices') from exc
    except decode.DecodeProblem as exc:
        raise BadUpload(str(exc)) from exc


@dataclass(frozen=True)
class Scores:
    """Agreement of a prediction with its ground truth (Dice/IoU ``None`` without truth)."""

    dice: float | None
    iou: float | None
    predicted_pixels: int
    truth_pixels: int | None
    total_pixels: int

    def as_row(self) -> dict[str, Any]:
        """A table row: rounded scores and areas in pixels and % of the slice (or volume)."""

        def percent(pixels: int | None) -> float | None:
            return None if pixels is None else round(100.0 * pixels / self.total_pixels, 3)

        return {
            "dice": None if self.dice is None else round(self.dice, 4),
            "iou": None if self.iou is None else round(self.iou, 4),
            "predicted_pixels": self.predicted_pixels,
            "predicted_percent": percent(self.predicted_pixels),
            "truth_pixels": self.truth_pixels,
            "truth_percent": percent(self.truth_pixels),
        }


def score(prediction: np.ndarray, truth: np.ndarray | None) -> Scores:
    """Dice, IoU and areas of a slice, or of a volume with every voxel counted once (not a mean
    over slices); ``inference.metrics`` conventions: both empty -> 1."""
    if truth is None:
        return Scores(None, None, metrics.area(prediction), None, int(np.asarray(prediction).size))
    scores = metrics.slice_scores(prediction, truth)
    return Scores(scores.dice, scores.iou, scores.predicted_pixels, scores.true_pixels,
                  scores.total_pixels)
