"""The engines behind the Predictor: OpenVINO agrees with torch fp32, its IR cache is reused and
rebuilt when corrupt, one engine serves several threads, int8 is used only when its manifest
belongs to the weights and its gate holds, and many engines freed in any order leave signals
working (the shared ``openvino.Core``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.engines import create_engine
from inference.predictor import Predictor
from models.precision import cpu_supports_bf16
from tests.conftest import REPO
from tests.inference.samples import brain_like, make_checkpoint

ov = pytest.importorskip("openvino", reason="the openvino engine needs openvino installed")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [brain_like(64 + 8 * k, 64, seed=k) for k in range(6)]


def copy_checkpoint(source: Path, folder: Path) -> Path:
    """The weights and card in ``folder`` (files written beside them stay out of other tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (source, source.with_suffix(".json")):
        shutil.copy(path, folder / path.name)
    return folder / source.name


def test_openvino_agrees_with_torch_fp32(spread_checkpoint: Path, images) -> None:
    torch_p = Predictor.from_checkpoint(spread_checkpoint, engine="torch", precision="fp32")
    ov_p = Predictor.from_checkpoint(spread_checkpoint, engine="openvino", precision="fp32")
    assert (ov_p.engine.name, ov_p.precision, ov_p.model) == ("openvino", "fp32", None)
    reference, result = torch_p.predict_batch(images), ov_p.predict_batch(images)
    pairs = list(zip(reference, result, strict=True))
    diffs = [np.abs(a.probabilities - b.probabilities).max() for a, b in pairs]
    assert max(diffs) < 1e-4
    agree = sum(int((a.mask != b.mask).sum()) for a, b in zip(reference, result, strict=True))
    total = sum(a.mask.size for a in reference)
    assert agree / total < 1e-3  # only pixels within 1e-4 of the threshold may flip
    assert any(r.tumour_pixels for r in reference) and not all(r.mask.all() for r in reference)


def test_auto_is_openvino_on_cpu_and_runtime_says_so(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    runtime = predictor.runtime()
    assert runtime["engine"] == "openvino" and runtime["device"] == "cpu"
    assert runtime["precision"] == ("bf16" if cpu_supports_bf16() else "fp32")
    assert runtime["openvino"] == ov.get_version().split("-")[0]
    assert isinstance(runtime["cpu"], str) and isinstance(runtime["cpu_flags"], list)
    assert any("int8 not used" in note for note in runtime["notes"])


def test_precisions_an_engine_cannot_run_are_refused(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="openvino engine only"):
        Predictor.from_checkpoint(tiny_checkpoint, engine="torch", precision="int8")
    with pytest.raises(ValueError, match="int8"):
        Predictor.from_checkpoint(tiny_checkpoint, engine="openvino", precision="int8")
    with pytest.raises(ValueError, match="engine must be one of"):
        Predictor.from_checkpoint(tiny_checkpoint, engine="tensorrt")
    if not cpu_supports_bf16():
        with pytest.raises(ValueError, match="no native bf16"):
            Predictor.from_checkpoint(tiny_checkpoint, engine="openvino", precision="bf16")
        # auto falls back to torch, the engine that emulates bf16
        assert Predictor.from_checkpoint(tiny_checkpoint, precision="bf16").engine.name == "torch"


def test_conversion_is_cached_and_a_corrupt_entry_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images
) -> None:
    from inference.engines import openvino_engine

    monkeypatch.setenv("LGGSEG_CACHE_DIR", str(tmp_path / "cache"))
    checkpoint = make_checkpoint(tmp_path / "m.safetensors", seed=3)
    conversions = []
    real_convert = openvino_engine.convert

    def counting_convert(*args, **kwargs):
        conversions.append(1)
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(openvino_engine, "convert", counting_convert)
    first = Predictor.from_checkpoint(checkpoint, engine="openvino", precision="fp32")
    expected = first.predict_batch(images)
    (entry,) = (tmp_path / "cache" / "openvino").iterdir()
    sha = json.loads(checkpoint.with_suffix(".json").read_text())["weights_sha256"]
    assert entry.name.startswith(f"{sha}-64px-")
    assert entry.name.endswith(f"ov{ov.get_version().split('-')[0]}")
    assert sorted(p.name for p in entry.iterdir()) == ["done.json", "model.bin", "model.xml"]

    Predictor.from_checkpoint(checkpoint, engine="openvino", precision="fp32")
    assert len(conversions) == 1  # the second load read the cache

    (entry / "model.bin").write_bytes(b"\0" * 100)  # truncated: the size check catches it
    rebuilt = Predictor.from_checkpoint(checkpoint, engine="openvino", precision="fp32")
    assert len(conversions) == 2
    (entry / "model.xml").write_text("<not xml")
    sizes = json.loads((entry / "done.json").read_text())
    sizes["model.xml"] = len("<not xml")
    (entry / "done.json").write_text(json.dumps(sizes))  # sizes match, the XML does not parse
    again = Predictor.from_checkpoint(checkpoint, engine="openvino", precision="fp32")
    assert len(conversions) == 3
    for a, b, c in zip(
        expected, rebuilt.predict_batch(images), again.predict_batch(images), strict=True
    ):
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-6)
        assert np.allclose(a.probabilities, c.probabilities, atol=1e-6)


def test_four_threads_sharing_one_engine_get_what_one_thread_gets(
    spread_checkpoint: Path,
) -> None:
    predictor = Predictor.from_checkpoint(spread_checkpoint, engine="openvino", precision="fp32")
    batches = [[brain_like(64, 64, seed=10 * k + j) for j in range(1 + k % 3)] for k in range(12)]
    alone = [predictor.predict_batch(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        shared = list(pool.map(predictor.predict_batch, batches))
    for one, many in zip(alone, shared, strict=True):
        assert len(one) == len(many)
        for a, b in zip(one, many, strict=True):
            assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_engines_freed_oldest_first_leave_signals_working(tiny_checkpoint: Path) -> None:
    """Regression: with one Core per engine, three engines freed oldest-first left the thread on
    an unmapped signal stack and the next Python-handled signal killed the process (139)."""
    script = textwrap.dedent(f"""
        import gc, signal, sys
        import torch
        from inference.engines.openvino_engine import OpenVINOEngine, convert
        from models.checkpoint import load_checkpoint
        model, _ = load_checkpoint({str(tiny_checkpoint)!r})
        engines = [OpenVINOEngine(convert(model, 64), "fp32") for _ in range(3)]
        for engine in engines:
            engine.forward(torch.zeros(1, 3, 64, 64))
        while engines:
            del engines[0]
            gc.collect()
        seen = []
        signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
        signal.raise_signal(signal.SIGUSR1)
        print("handled", len(seen))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "handled 1" in done.stdout


# ---------------------------------------------------------------------- int8


@pytest.fixture(scope="module")
def int8_checkpoint(tmp_path_factory: pytest.TempPathFactory, spread_checkpoint: Path) -> Path:
    """A copy of ``spread_checkpoint`` with an int8 model beside it, calibrated on synthetic
    slices (the real calibration, on training patients, is ``training.quantize``'s)."""
    import nncf

    from inference.engines.openvino_engine import int8_paths
    from training.quantize import save_int8

    checkpoint = copy_checkpoint(spread_checkpoint, tmp_path_factory.mktemp("int8"))
    fp32 = Predictor.from_checkpoint(checkpoint, engine="openvino", precision="fp32")
    from inference.engines.openvino_engine import cached_ir
    from models.checkpoint import load_checkpoint

    model, card = load_checkpoint(checkpoint)
    ir = cached_ir(str(card.weights_sha256), model, 64)
    inputs = [fp32.prepare([brain_like(64, 64, seed=s)]).numpy() for s in range(12)]
    save_int8(nncf.quantize(ir, nncf.Dataset(inputs), subset_size=len(inputs)), checkpoint)
    _, manifest = int8_paths(checkpoint)
    manifest.write_text(json.dumps({"weights_sha256": card.weights_sha256, "validation": {
        "delta_mean_patient_dice": -0.001, "gate": 0.005}}))
    return checkpoint


def set_manifest(checkpoint: Path, **changes: object) -> None:
    from inference.engines.openvino_engine import int8_paths

    _, path = int8_paths(checkpoint)
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "delta":
            manifest["validation"]["delta_mean_patient_dice"] = value
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))


def test_auto_uses_int8_when_its_gate_holds(int8_checkpoint: Path, images) -> None:
    int8 = Predictor.from_checkpoint(int8_checkpoint)
    assert (int8.engine.name, int8.precision) == ("openvino", "int8")
    assert int8.runtime()["source"] == "spread.int8.xml"
    fp32 = Predictor.from_checkpoint(int8_checkpoint, engine="torch", precision="fp32")
    masks = [(a.mask, b.mask) for a, b in zip(
        fp32.predict_batch(images), int8.predict_batch(images), strict=True
    )]  # fmt: skip
    overlap = sum(int((a & b).sum()) for a, b in masks)
    size = sum(int(a.sum() + b.sum()) for a, b in masks)
    assert size > 0 and 2 * overlap / size > 0.9  # quantized, not another model


def test_int8_is_not_used_for_other_weights_or_outside_its_gate(int8_checkpoint: Path) -> None:
    set_manifest(int8_checkpoint, delta=0.02)
    try:
        outside = Predictor.from_checkpoint(int8_checkpoint)
        assert outside.precision != "int8"
        assert "int8 not used: its validation gate failed" in outside.runtime()["notes"]
        # asked for explicitly, a matching int8 model runs (e.g. to measure it)
        explicit = Predictor.from_checkpoint(int8_checkpoint, precision="int8")
        assert explicit.precision == "int8"
    finally:
        set_manifest(int8_checkpoint, delta=-0.001)
    set_manifest(int8_checkpoint, weights_sha256="0" * 64)
    try:
        other = Predictor.from_checkpoint(int8_checkpoint)
        assert other.precision != "int8"
        assert any("other weights" in note for note in other.runtime()["notes"])
        with pytest.raises(ValueError, match="other weights"):
            Predictor.from_checkpoint(int8_checkpoint, precision="int8")
    finally:
        sha = json.loads(int8_checkpoint.with_suffix(".json").read_text())["weights_sha256"]
        set_manifest(int8_checkpoint, weights_sha256=sha)


def test_create_engine_on_cuda_is_torch_for_auto(tiny_checkpoint: Path) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="runs on the CPU"):
            create_engine(torch.nn.Identity(), image_size=64, weights_path="", weights_sha256="x",
                          device=torch.device("cuda"), engine="openvino")  # fmt: skip
        return
    predictor = Predictor.from_checkpoint(tiny_checkpoint, "cuda")  # pragma: no cover
    assert predictor.engine.name == "torch"  # pragma: no cover


def test_the_engine_settings_of_the_api_and_the_viewer(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from app.backend import LocalSegmenter
    from app.settings import ViewerSettings
    from inference.api.settings import ServeSettings

    monkeypatch.setenv("LGGSEG_SERVE_ENGINE", "torch")
    monkeypatch.setenv("LGGSEG_SERVE_PRECISION", "int8")
    serve = ServeSettings()
    assert (serve.engine, serve.precision) == ("torch", "int8")
    monkeypatch.setenv("LGGSEG_ENGINE", "openvino")
    assert ViewerSettings().engine == "openvino"
    monkeypatch.setenv("LGGSEG_ENGINE", "tensorrt")
    with pytest.raises(ValidationError):
        ViewerSettings()
    local = LocalSegmenter.load(tiny_checkpoint, "cpu", "torch")
    assert local.predictor.engine.name == "torch"


def test_same_weights_at_two_input_sizes_get_their_own_conversions(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Regression: the cache was keyed by the weights alone, and a 32 px card with the tiny
    checkpoint's weights (same seed) was handed the 64 px IR."""
    small = make_checkpoint(tmp_path / "small.safetensors", image_size=32, seed=0)
    shas = {json.loads(p.with_suffix(".json").read_text())["weights_sha256"]
            for p in (small, tiny_checkpoint)}  # fmt: skip
    assert len(shas) == 1
    for checkpoint in (tiny_checkpoint, small):
        predictor = Predictor.from_checkpoint(checkpoint, engine="openvino", precision="fp32")
        result = predictor.predict_slice(brain_like(40, 48))
        assert result.mask.shape == (40, 48)
