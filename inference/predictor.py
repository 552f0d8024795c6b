"""``Predictor``: the one way to run the model, for the CLI, the API and the viewer.

It is built from a checkpoint only (safetensors weights + JSON card; nothing is unpickled) and
applies the preprocessing recorded in the card through ``data.preprocessing``, so an uploaded
slice reaches the network exactly as a training slice did (see ``Predictor.prepare``).

Speed: the network runs on an engine (``inference.engines``): ``torch`` (any device; channels-last,
bf16 autocast where the hardware has native bf16, else fp32) or ``openvino`` on CPU (the checkpoint
converted once and cached; int8 when a validated int8 model lies beside the weights, else bf16
where native, f32 otherwise). ``engine="auto"`` picks OpenVINO on CPU and torch on CUDA;
:meth:`Predictor.runtime` says what runs.

bf16 accuracy (``tests/inference/test_precision.py``, 27 real kaggle_3m slices from 9 patients):
against fp32, a partly trained resnet18 model gives max |p_bf16 - p_fp32| = 0.013, mean 0.0003,
and masks that agree with Dice 0.996 over all slices. Random-weights models with artificially
steep logits give larger worst-case differences (0.24-0.39) but still mask Dice >= 0.99.
The test asserts Dice >= 0.98 always, and max |dp| <= 0.05 for a trained model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.preprocessing import preprocess_image, restore_size
from inference.engines import Built, create_engine, runtime_info
from models.card import ModelCard
from models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SlicePrediction:
    """The model's answer for one slice, at the input's own height and width."""

    probabilities: np.ndarray
    """``H x W`` float32 tumour probabilities in [0, 1]."""
    mask: np.ndarray
    """``H x W`` uint8, 1 = tumour (probability > the threshold, as in training.evaluate)."""
    max_probability: float
    tumour_pixels: int

    @property
    def tumour_fraction(self) -> float:
        return self.tumour_pixels / self.mask.size


@dataclass
class StageTimes:
    """Seconds one :meth:`Predictor.predict_batch` call spent in each step (the API reports them
    in its ``Server-Timing`` header)."""

    prepare_s: float = 0.0
    """the decoded slices to the network's input: size, channels, per-channel z-score."""
    network_s: float = 0.0
    """the engine's forward pass and the sigmoid (both passes with flip-TTA)."""
    finish_s: float = 0.0
    """back to each input's size, threshold, per-slice totals."""


@dataclass(frozen=True)
class SliceSummary:
    """Per-slice line of a volume prediction."""

    index: int
    tumour_pixels: int
    max_probability: float


@dataclass(frozen=True)
class VolumePrediction:
    """A volume's masks in the input's spatial shape ``H x W x Z`` (slice ``k`` = ``[:, :, k]``)."""

    masks: np.ndarray
    """``H x W x Z`` uint8 0/1."""
    probabilities: np.ndarray
    """``H x W x Z`` float32."""
    slices: list[SliceSummary]

    @property
    def tumour_voxels(self) -> int:
        return int(self.masks.sum(dtype=np.int64))

    @classmethod
    def from_slices(cls, predictions: Sequence[SlicePrediction]) -> VolumePrediction:
        """Stack per-slice predictions (all the same size) along a new 3rd axis."""
        if not predictions:
            raise ValueError("a volume needs at least one slice")
        return cls(
            masks=np.stack([p.mask for p in predictions], axis=2),
            probabilities=np.stack([p.probabilities for p in predictions], axis=2),
            slices=[
                SliceSummary(k, p.tumour_pixels, p.max_probability)
                for k, p in enumerate(predictions)
            ],
        )


class Predictor:
    """Segment slices and volumes with a trained checkpoint.

    Use :meth:`from_checkpoint`. Calls from several threads at once are safe (the engines keep
    no per-call state); the API runs ``model_workers`` batches side by side, one by default.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        *,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        tta: bool = False,
        threshold: float = 0.5,
        weights_sha256: str | None = None,
        batch_size: int = 8,
        engine: str = "torch",
        weights_path: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, not {threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.device = torch.device(device)
        self.tta = tta
        self.threshold = float(threshold)
        self.batch_size = batch_size
        self.card = card
        self.preprocessing = card.preprocessing
        sha = weights_sha256 or card.weights_sha256 or "unknown"
        self._built: Built = create_engine(
            model,
            image_size=self.preprocessing.image_size,
            weights_path=weights_path or "",
            weights_sha256=sha,
            device=self.device,
            engine=engine,
            precision=precision,
            threads=threads,
        )
        self.engine = self._built.engine
        self.precision = self.engine.precision
        self.model: torch.nn.Module | None = getattr(self.engine, "model", None)
        """The torch module where the torch engine runs it; None for the other engines."""
        name = card.name or "lggseg-model"
        version = card.version or "0"
        self.model_version = f"{name}-{version}+{sha[:12]}"

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        precision: str = "auto",
        tta: bool = False,
        threshold: float = 0.5,
        batch_size: int = 8,
        engine: str = "auto",
        threads: int | None = None,
    ) -> Predictor:
        """Load ``path`` (``.safetensors`` with its ``.json`` card beside it).

        ``engine``: ``auto`` (OpenVINO on CPU where installed, torch elsewhere), ``torch`` or
        ``openvino``; ``precision``: ``auto``, ``fp32``, ``bf16`` or ``int8`` (OpenVINO with
        ``training.quantize``'s model). ValueError when the pair cannot run here.

        Raises ``models.checkpoint.CheckpointError`` saying why a checkpoint is unusable
        (missing, truncated, tampered with, wrong architecture, invalid card).
        """
        model, card = load_checkpoint(path, device)
        sha = card.weights_sha256
        if not sha:  # verified by load_checkpoint when present; otherwise hash it ourselves
            sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if card.name is None:
            card = card.with_updates(name=Path(path).stem)
        return cls(
            model,
            card,
            device=device,
            precision=precision,
            tta=tta,
            threshold=threshold,
            weights_sha256=sha,
            batch_size=batch_size,
            engine=engine,
            weights_path=path,
            threads=threads,
        )

    # ------------------------------------------------------------------ the pipeline

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Raw slices -> the exact float32 ``N x 3 x S x S`` tensor fed to the network (on CPU)."""
        if len(images) == 0:
            raise ValueError("no images given")
        batch = np.stack([preprocess_image(image, self.preprocessing) for image in images])
        return torch.from_numpy(batch)

    def _forward(self, batch: torch.Tensor) -> np.ndarray:
        """``N x 3 x S x S`` -> ``N x S x S`` float32 probabilities (flip-TTA averaged if on)."""
        n = batch.shape[0]
        if self.tta:
            batch = torch.cat([batch, torch.flip(batch, dims=[3])])
        probs = torch.sigmoid(self.engine.forward(batch)[:, 0])
        if self.tta:
            probs = (probs[:n] + torch.flip(probs[n:], dims=[2])) / 2
        return probs.numpy()

    def _finish(self, image: np.ndarray, probabilities: np.ndarray) -> SlicePrediction:
        height, width = np.asarray(image).shape[:2]
        probs = restore_size(probabilities, height, width)
        mask = (probs > self.threshold).astype(np.uint8)
        return SlicePrediction(
            probabilities=probs,
            mask=mask,
            max_probability=float(probs.max()),
            tumour_pixels=int(mask.sum(dtype=np.int64)),
        )

    def predict_batch(
        self, images: Sequence[np.ndarray], timings: StageTimes | None = None
    ) -> list[SlicePrediction]:
        """Segment several slices in one forward pass; each result is at its input's size.

        ``timings``, when given, receives the seconds spent in each step.
        """
        if len(images) == 0:
            return []
        start = time.perf_counter()
        batch = self.prepare(images)
        prepared = time.perf_counter()
        probs = self._forward(batch)
        forwarded = time.perf_counter()
        results = [self._finish(image, p) for image, p in zip(images, probs, strict=True)]
        if timings is not None:
            timings.prepare_s = prepared - start
            timings.network_s = forwarded - prepared
            timings.finish_s = time.perf_counter() - forwarded
        return results

    def predict_slice(self, image: np.ndarray) -> SlicePrediction:
        """Segment one 2-D slice ``H x W x 3`` (or ``x 4``, alpha dropped); see ``to_hwc3``."""
        return self.predict_batch([image])[0]

    def predict_volume(
        self, volume: np.ndarray | Sequence[np.ndarray], batch_size: int | None = None
    ) -> VolumePrediction:
        """Segment a stack: a list of ``H x W [x C]`` slices or an array ``H x W x Z [x C]``.

        Masks come back as ``H x W x Z`` (slice ``k`` is ``masks[:, :, k]``), whichever the input.
        """
        if isinstance(volume, np.ndarray):
            if volume.ndim not in (3, 4):
                raise ValueError(f"a volume array must be H x W x Z [x C]; got {volume.shape}")
            slices = [volume[:, :, k] for k in range(volume.shape[2])]
        else:
            slices = list(volume)
        if not slices:
            raise ValueError("the volume has no slices")
        height, width = np.asarray(slices[0]).shape[:2]
        if any(np.asarray(s).shape[:2] != (height, width) for s in slices):
            raise ValueError("all slices of a volume must have the same height and width")
        step = batch_size or self.batch_size
        predictions: list[SlicePrediction] = []
        for start in range(0, len(slices), step):
            predictions += self.predict_batch(slices[start : start + step])
        return VolumePrediction.from_slices(predictions)

    def runtime(self) -> dict[str, Any]:
        """What runs the network: engine, precision, device, CPU model and flags, versions, notes
        (shown by ``/v1/model`` and in ``training.evaluate``'s summary)."""
        return runtime_info(self._built)

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run dummy batches so the first real request does not pay for kernel selection."""
        size = self.preprocessing.image_size
        for n in batch_sizes:
            self._forward(torch.zeros(n, 3, size, size))
