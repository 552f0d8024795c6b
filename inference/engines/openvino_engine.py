"""The OpenVINO CPU engine: the checkpoint converted to OpenVINO IR once, cached on disk.

One process-wide ``openvino.Core`` (:func:`shared_core`) serves every engine, conversion check
and ``training.quantize``: each Core loads its own CPU plugin, which installs an alternate signal
stack on its first compile and restores the previous one when freed. Several Cores freed
oldest-first leave the thread on an unmapped signal stack, and the next signal Python handles
(a DataLoader's SIGCHLD, uvicorn's SIGTERM, pytest-timeout's SIGALRM) kills the process without
a word (exit 139). ``tests/inference/test_engines.py`` guards this.

The IR cache (``LGGSEG_CACHE_DIR``/openvino): one folder per weights SHA-256, IR precision and
OpenVINO version, moved into place whole (a reader sees a complete entry or none); an entry that
does not load is rebuilt from the checkpoint. bf16 or f32 is chosen when compiling, on the same
fp32 IR. The int8 IR (``training.quantize``) lies beside the weights with a manifest naming the
weights it was made from; it is used only for those weights.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from data.atomic import atomic_write_json
from inference.engines.cache import cache_dir
from models.precision import cpu_supports_bf16

if TYPE_CHECKING:
    import openvino as ov

log = logging.getLogger(__name__)

IR_PRECISION = "fp32"
"""The cached IR keeps the weights in fp32; bf16 is a compile-time choice on the CPU."""


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None where it is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return str(ov.get_version()).split("-")[0]


@lru_cache(maxsize=1)
def shared_core() -> ov.Core:
    """The process's one ``openvino.Core`` (see the module docstring for why only one)."""
    import openvino as ov

    return ov.Core()


class ConversionError(RuntimeError):
    """The converted model does not compute what the torch model computes."""


def _zero_pad_shortcut(
    x: torch.Tensor, planes: int, stride: int, spatial_dims: int = 2
) -> torch.Tensor:
    """MONAI's type-A ResNet shortcut (resnet18/34) written so that tracing keeps ``x``: the
    original concatenates ``out.data``, which a trace records as a constant of the example."""
    out = torch.nn.functional.avg_pool2d(x, kernel_size=1, stride=stride)
    return torch.nn.functional.pad(out, (0, 0, 0, 0, 0, planes - out.shape[1]))


@contextmanager
def _traceable(model: torch.nn.Module) -> Iterator[None]:
    """Swap the type-A shortcuts for :func:`_zero_pad_shortcut` while converting."""
    swapped = []
    for module in model.modules():
        shortcut = getattr(module, "downsample", None)
        if isinstance(shortcut, partial) and shortcut.func.__name__ == "_downsample_basic_block":
            setattr(module, "downsample", partial(_zero_pad_shortcut, **shortcut.keywords))  # noqa: B010
            swapped.append((module, shortcut))
    try:
        yield
    finally:
        for module, shortcut in swapped:
            setattr(module, "downsample", shortcut)  # noqa: B010


def convert(model: torch.nn.Module, image_size: int) -> ov.Model:
    """The torch model (fp32, eval) as an OpenVINO model with a dynamic batch axis, checked to
    compute what torch computes on a batch of two (ConversionError otherwise)."""
    import openvino as ov

    model = model.float().eval()
    example = torch.zeros(1, 3, image_size, image_size)
    with torch.inference_mode(), _traceable(model):
        converted = ov.convert_model(
            model, example_input=example, input=[ov.PartialShape([-1, 3, image_size, image_size])]
        )
    probe = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = torch.sigmoid(model(probe)).numpy()
    compiled = shared_core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = 1 / (1 + np.exp(-compiled(probe.numpy())[0]))
    error = float(np.abs(got - expected).max())
    if error > 1e-3:
        raise ConversionError(
            f"the OpenVINO conversion differs from torch by {error:.3g} in probability; "
            "use --engine torch (and report this model's architecture)"
        )
    return converted


def _entry(weights_sha256: str, image_size: int) -> Path:
    """The entry's folder: the IR depends on the weights, the input size (two cards may share
    weights and differ in size), its precision and the OpenVINO version."""
    name = f"{weights_sha256}-{image_size}px-{IR_PRECISION}-ov{openvino_version()}"
    return cache_dir() / "openvino" / name


def _read_entry(entry: Path) -> ov.Model | None:
    """The cached model, or None when the entry is absent, incomplete or unreadable."""
    done = entry / "done.json"
    if not done.is_file():
        return None
    try:
        sizes = json.loads(done.read_text())
        for name in ("model.xml", "model.bin"):
            if (entry / name).stat().st_size != sizes[name]:
                raise ValueError(f"{name} has the wrong size")
        return shared_core().read_model(entry / "model.xml")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        log.warning("OpenVINO cache entry %s is unusable (%s); rebuilding it", entry.name, exc)
        return None


def cached_ir(weights_sha256: str, model: torch.nn.Module, image_size: int) -> ov.Model:
    """The converted model from the cache, converting and caching it on a miss."""
    import openvino as ov

    entry = _entry(weights_sha256, image_size)
    cached = _read_entry(entry)
    if cached is not None:
        return cached
    log.info("converting the checkpoint to OpenVINO IR (once per weights) in %s", entry.parent)
    converted = convert(model, image_size)
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        ov.save_model(converted, staging / "model.xml", compress_to_fp16=False)
        sizes = {n: (staging / n).stat().st_size for n in ("model.xml", "model.bin")}
        atomic_write_json(staging / "done.json", sizes)
        if entry.exists():  # corrupt (or a concurrent writer's): replace it
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(staging, entry)
        except OSError:  # another process put its (identical) entry there first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return converted


# ---------------------------------------------------------------------- int8 artifact


def int8_paths(weights: str | Path) -> tuple[Path, Path]:
    """``(IR .xml, manifest .json)`` of the int8 model beside ``weights``."""
    stem = Path(weights).with_suffix("")
    return stem.with_name(stem.name + ".int8.xml"), stem.with_name(stem.name + ".int8.json")


def int8_manifest(
    weights: str | Path, weights_sha256: str, image_size: int | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The int8 manifest that belongs to these weights (and input size), or None and why not."""
    xml, manifest = int8_paths(weights)
    if not (xml.is_file() and xml.with_suffix(".bin").is_file() and manifest.is_file()):
        return None, f"no int8 model beside the weights ({xml.name}; see training.quantize)"
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{manifest.name} is unreadable ({exc})"
    if not isinstance(info, dict) or info.get("weights_sha256") != weights_sha256:
        return None, f"{xml.name} was made from other weights (re-run training.quantize)"
    if image_size is not None and info.get("image_size", image_size) != image_size:
        return None, f"{xml.name} takes {info['image_size']} px, the card {image_size} px"
    return info, "ok"


def gate_passed(info: dict[str, Any]) -> bool:
    """True when the manifest records a validation Dice within its gate of torch fp32."""
    validation = info.get("validation") or {}
    delta, gate = validation.get("delta_mean_patient_dice"), validation.get("gate")
    return isinstance(delta, int | float) and isinstance(gate, int | float) and abs(delta) <= gate


# ---------------------------------------------------------------------- the engine


class OpenVINOEngine:
    """``forward``: ``N x 3 x S x S`` float32 -> ``N x 1 x S x S`` float32 logits.

    The engine keeps a pool of infer requests: threads sharing it each take one (creating a new
    one when none is free), so calls from several threads at once are safe.
    """

    name = "openvino"

    def __init__(
        self, model: ov.Model, precision: str, *, threads: int | None = None, source: str = ""
    ) -> None:
        if precision not in ("fp32", "bf16", "int8"):
            raise ValueError(f"the openvino engine runs fp32, bf16 or int8, not {precision!r}")
        self.device = torch.device("cpu")
        self.precision = precision
        self.source = source
        bf16 = precision == "bf16" or (precision == "int8" and cpu_supports_bf16())
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            # Unpinned: pinned inference threads share their cores badly with the API's event
            # loop and with other processes (2-core EPYC, bundled int8 model, API sequential
            # p50 250 -> 195 ms, interleaved runs of benchmarks/api_load.py).
            "ENABLE_CPU_PINNING": False,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = shared_core().compile_model(model, "CPU", config)
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer({0: x}, share_inputs=True)
            logits = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        finally:
            self._idle.put(request)
        return torch.from_numpy(logits)

    def describe(self) -> dict[str, Any]:
        props = {}
        for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS"):
            try:
                value = self.compiled.get_property(key)
                text = value.to_string() if hasattr(value, "to_string") else str(value)
                props[key.lower()] = text
            except RuntimeError:  # pragma: no cover - property names vary across versions
                continue
        return {"openvino": openvino_version(), "source": self.source, **props}
