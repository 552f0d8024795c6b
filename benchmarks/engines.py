"""Engine x precision x batch: ms/slice and slices/s of the network alone, with its agreement
with torch fp32, on this CPU.

    python benchmarks/engines.py [--checkpoint CKPT] [--batches 1 8] [--seconds 5]
                                 [--threads N] [--data-dir kaggle_3m] [--emulated-bf16]

Rows: torch fp32, torch bf16 (where native, or with --emulated-bf16), OpenVINO f32, OpenVINO bf16
(native only), OpenVINO int8 (where ``python -m training.quantize`` left a model beside the
weights), ONNX Runtime fp32 (where ``onnxruntime`` is installed) and int8 (static QDQ,
calibrated on 120 training slices: needs --data-dir). Columns: ms/slice (median of
timed calls / batch), slices/s, max |p - p_torch_fp32| on the inputs (real slices with
--data-dir, else random), and the compute ceiling: the network's GFLOP per slice over the peak
FLOP rate of this CPU's vector units (fp32: 2 FMA pipes x 8 lanes x 2 FLOP per cycle per core on
AVX2, 16 lanes on AVX-512; int8 without VNNI: vpmaddubsw + vpmaddwd, at best 2x fp32; with VNNI
4x; AMX not modelled) at the nominal clock, for all threads. Prints the CPU model and its
bf16/AMX/VNNI flags first. A benchmark, never a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.engines.cpu import cpu_flags, cpu_model  # noqa: E402
from inference.predictor import Predictor  # noqa: E402
from models import BUNDLED_CHECKPOINT  # noqa: E402
from models.precision import cpu_supports_bf16  # noqa: E402

GFLOP_PER_SLICE_256 = 19.6
"""Forward GFLOP of the ResNet-50-UNet per 256 x 256 slice (benchmarks/compute_ceiling.py)."""


def clock_ghz() -> float:
    """The CPU's current clock from /proc/cpuinfo (a stand-in for the sustained all-core clock)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return float("nan")


def peak_gflops(threads: int, precision: str) -> float:
    """Peak multiply-add rate of ``threads`` cores' vector units (see the module docstring)."""
    flags = set(cpu_flags())
    lanes = 16 if "avx512f" in flags else 8
    fp32 = 2 * lanes * 2 * clock_ghz() * threads  # 2 FMA pipes x lanes x (mul + add)
    if precision == "int8":
        return fp32 * (4 if {"avx512_vnni", "avx_vnni"} & flags else 2)
    if precision == "bf16":
        return fp32 * (2 if "avx512_bf16" in flags else 1)
    return fp32


def timed(run: Callable[[], object], seconds: float) -> float:
    """Median wall time of ``run`` (s) over calls filling about ``seconds`` (at least 3)."""
    run()  # warm-up: kernel selection, first-call allocations
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def export_onnx(checkpoint: Path, folder: Path) -> Path:
    """The checkpoint as ``folder/model.onnx`` (dynamic batch axis, input "x")."""
    from inference.engines.openvino_engine import _traceable
    from models.checkpoint import load_checkpoint

    model, card = load_checkpoint(checkpoint)
    size = card.preprocessing.image_size
    path = folder / "model.onnx"
    with torch.inference_mode(), _traceable(model):
        example = (torch.zeros(1, 3, size, size),)
        torch.onnx.export(model.eval(), example, str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)  # fmt: skip
    return path


def onnxruntime_session(path: Path, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX Runtime CPU session of ``path``, as a forward function."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def onnxruntime_forward(
    checkpoint: Path, threads: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX Runtime session of the checkpoint (fp32), as a forward function."""
    import onnxruntime  # noqa: F401 - ImportError before the export when it is missing

    return onnxruntime_session(export_onnx(checkpoint, Path(tempfile.mkdtemp())), threads)


def onnxruntime_int8_forward(
    checkpoint: Path, threads: int, data_dir: Path, slices: int = 120
) -> Callable[[torch.Tensor], torch.Tensor]:
    """ONNX Runtime int8: static QDQ quantization (uint8 activations, int8 per-channel weights
    with ``reduce_range``, MinMax), calibrated on ``slices`` slices of the card's training
    patients like ``training.quantize``. Of ORT's int8 variants this is the fastest on an AVX2
    CPU without VNNI (uint8 x uint8 and int8 x int8 weights took 95 and 98 ms a slice here)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from data.kaggle3m import read_image
    from data.preprocessing import preprocess_image
    from models.checkpoint import load_card
    from training.quantize import calibration_slices

    folder = Path(tempfile.mkdtemp())
    exported = export_onnx(checkpoint, folder)
    card = load_card(checkpoint)
    files = calibration_slices(card, data_dir, slices)

    class Slices(CalibrationDataReader):
        def __init__(self) -> None:
            self.files = iter(files)

        def get_next(self) -> dict[str, object] | None:
            path = next(self.files, None)
            if path is None:
                return None
            return {"x": preprocess_image(read_image(path), card.preprocessing)[None]}

    prepared, quantized = folder / "prepared.onnx", folder / "int8.onnx"
    quant_pre_process(str(exported), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(quantized), Slices(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, reduce_range=True,
                    calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
    return onnxruntime_session(quantized, threads)


def inputs(predictor: Predictor, data_dir: Path | None, count: int) -> torch.Tensor:
    if data_dir is not None:
        from data.kaggle3m import read_image

        files = sorted(data_dir.glob("*/*[0-9].tif"))[:: max(1, 2600 // count)][:count]
        return predictor.prepare([read_image(f) for f in files])
    size = predictor.preprocessing.image_size
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_CHECKPOINT)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per row and batch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", type=Path, help="kaggle_3m folder: real input slices")
    parser.add_argument("--emulated-bf16", action="store_true",
                        help="also time torch bf16 where the CPU only emulates it (slow)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"CPU: {cpu_model()}; flags: {', '.join(cpu_flags()) or 'none'}; "
          f"native bf16: {cpu_supports_bf16()}; {args.threads} thread(s) at ~{clock_ghz():.2f} GHz")
    rows: list[tuple[str, str]] = [("torch", "fp32"), ("openvino", "fp32")]
    if cpu_supports_bf16() or args.emulated_bf16:
        rows.insert(1, ("torch", "bf16"))
    if cpu_supports_bf16():
        rows.append(("openvino", "bf16"))
    rows.append(("openvino", "int8"))
    engines: dict[tuple[str, str], Callable[[torch.Tensor], torch.Tensor]] = {}
    for engine, precision in rows:
        try:
            predictor = Predictor.from_checkpoint(args.checkpoint, engine=engine,
                                                  precision=precision, threads=args.threads)
        except ValueError as exc:
            print(f"skipped {engine} {precision}: {exc}")
            continue
        engines[(engine, precision)] = predictor.engine.forward
    try:
        engines[("onnxruntime", "fp32")] = onnxruntime_forward(args.checkpoint, args.threads)
    except ImportError:
        print("skipped onnxruntime: not installed (pip install onnxruntime onnx)")
    if args.data_dir is not None and ("onnxruntime", "fp32") in engines:
        engines[("onnxruntime", "int8")] = onnxruntime_int8_forward(
            args.checkpoint, args.threads, args.data_dir
        )
    elif args.data_dir is None:
        print("skipped onnxruntime int8: its calibration needs --data-dir")
    reference_predictor = Predictor.from_checkpoint(args.checkpoint, engine="torch",
                                                    precision="fp32")
    probe = inputs(reference_predictor, args.data_dir, 8)
    reference = torch.sigmoid(engines[("torch", "fp32")](probe))
    size = reference_predictor.preprocessing.image_size
    gflop = GFLOP_PER_SLICE_256 * (size / 256) ** 2

    print("\n| engine | precision | batch | ms/slice | slices/s | ceiling ms/slice | "
          "max abs dp vs torch fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (engine, precision), forward in engines.items():
        probs = torch.sigmoid(forward(probe))
        diff = float((probs - reference).abs().max())
        ceiling = gflop / peak_gflops(args.threads, precision) * 1000
        for batch in args.batches:
            x = probe[:batch] if batch <= len(probe) else probe.repeat(batch // 8 + 1, 1, 1, 1)[
                :batch]  # fmt: skip
            seconds = timed(lambda x=x, forward=forward: forward(x), args.seconds) / batch
            print(f"| {engine} | {precision} | {batch} | {seconds * 1000:.1f} | "
                  f"{1 / seconds:.1f} | {ceiling:.0f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
