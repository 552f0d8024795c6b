"""Load test of the inference API on loopback: open-loop constant rate, and single-slice latency.

    python benchmarks/api_load.py --data-dir ../shared/data/lgg/kaggle_3m \\
        --random-model resnet50 --latency 50 --rate 20 --rate 40 --duration 60

Sequential: one request at a time over one keep-alive connection (``http.client`` with the
multipart body built beforehand, like curl: the client adds almost nothing). Each answer's
``Server-Timing`` header says how long the server spent decoding, queued, preparing, in the
network, finishing and encoding; the second table gives their medians and the round trip less
the network, per request: what the API adds to the model (issue 14's target: <= 5 ms).

Volumes (``--volumes N``): one real patient's slices as a zip to ``/v1/segment/volume``, N times
one after another: slices/s through the API, against (``--baseline``) the served engine's
``Predictor.predict_volume`` on the same slices in this process (issue 14: the volume route
should reach the engine's batch throughput).

Open loop: request ``i`` is sent at ``start + i / rate`` whatever happened to the earlier ones
(closed-loop tools such as wrk wait for answers and hide the queueing a real client sees), and
its latency is counted from that scheduled time. Each run is bounded by ``--duration`` and
``--max-requests``; every request ends with an answer, a timeout or a connection error, and
``lost`` counts the ones that got no HTTP answer at all.

The server is either one already running (``--url``) or started here on a free port from
``--checkpoint`` or from a random-weights model of the real architecture (``--random-model``:
same compute as the trained model, meaningless masks). Slices are real kaggle_3m ``.tif`` files,
sent as their bytes, like the viewer does. Prints one markdown table per mode, the server's
runtime (engine, precision, CPU model and flags from ``GET /v1/model``) and, with
``--baseline``, the bare forward pass (batch 1, in this process, after the API runs) of torch in
bf16 where the CPU has it natively (else fp32) and of the served engine, and the ratio of the
API's sequential p50 to torch's bare forward (issue 14's target: <= 0.6).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import os
import re
import statistics
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.servers import Server, ServerError, free_port, start_server  # noqa: E402


@dataclass
class Outcome:
    status: int | None  # None: no HTTP answer (timeout, connection error)
    latency_s: float
    error: str = ""
    stages: dict[str, float] = field(default_factory=dict)  # Server-Timing, seconds


STAGES = ("decode", "queue", "prepare", "network", "finish", "encode")


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``decode;dur=1.6, network;dur=58.4;desc="batch of 1"`` -> {name: seconds}."""
    stages: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        for param in params:
            if param.startswith("dur="):
                stages[name] = float(param[4:]) / 1000
    return stages


@dataclass
class RunResult:
    offered_rate: float
    duration_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    batch_mean: float | None = None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def patient_zip(data_dir: Path) -> tuple[bytes, list[Path]]:
    """The first patient's slice files (no masks) as a zip (stored: the TIFFs are compressed)."""
    folders = sorted(p for p in data_dir.glob("TCGA_*") if p.is_dir())
    if not folders:
        raise SystemExit(f"no kaggle_3m patients under {data_dir}")
    files = sorted(p for p in folders[0].glob("*.tif") if not p.name.endswith("_mask.tif"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in files:
            archive.write(path, path.name)
    return buffer.getvalue(), files


def volumes(
    url: str, blob: bytes, count: int, timeout_s: float, api_key: str | None
) -> list[float]:
    """Seconds of each of ``count`` sequential volume requests (after one warm-up)."""
    headers = {"X-API-Key": api_key} if api_key else {}
    times = []
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as client:
        for i in range(count + 1):
            start = time.perf_counter()
            answer = client.post("/v1/segment/volume", files={"file": ("patient.zip", blob)})
            if answer.status_code != 200:
                raise SystemExit(f"volume request answered {answer.status_code}: {answer.text}")
            if i:
                times.append(time.perf_counter() - start)
    return times


def bare_volume_s(checkpoint: Path, runtime: dict, files: list[Path], repeats: int = 3) -> float:
    """Median seconds of the served engine's ``predict_volume`` on ``files`` in this process."""
    from inference.decode import DecodeLimits, decode_slice
    from inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(
        checkpoint, engine=runtime.get("engine", "auto"), precision=runtime.get("precision", "auto")
    )
    slices = [decode_slice(path.read_bytes(), DecodeLimits()) for path in files]
    predictor.predict_volume(slices)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict_volume(slices)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_slices(data_dir: Path, count: int) -> list[bytes]:
    """``count`` real slice files (tumour and tumour-free), spread over the patients."""
    files = sorted(p for p in data_dir.glob("TCGA_*/*.tif") if not p.name.endswith("_mask.tif"))
    if not files:
        raise SystemExit(f"no kaggle_3m slices under {data_dir}")
    step = max(1, len(files) // count)
    return [p.read_bytes() for p in files[::step][:count]]


async def one_request(
    client: httpx.AsyncClient, data: bytes, scheduled: float, timeout_s: float
) -> Outcome:
    try:
        response = await client.post(
            "/v1/segment", files={"file": ("slice.tif", data)}, timeout=timeout_s
        )
        await response.aread()
        return Outcome(response.status_code, time.perf_counter() - scheduled)
    except httpx.HTTPError as exc:
        return Outcome(None, time.perf_counter() - scheduled, type(exc).__name__)


async def batch_stats(client: httpx.AsyncClient) -> tuple[float, float]:
    text = (await client.get("/metrics")).text

    def value(name: str) -> float:
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return value("lggseg_batch_size_sum"), value("lggseg_batch_size_count")


def client_for(url: str, api_key: str | None) -> httpx.AsyncClient:
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    return httpx.AsyncClient(base_url=url, limits=limits, headers=headers)


async def open_loop(
    url: str, slices: list[bytes], rate: float, duration_s: float, max_requests: int,
    timeout_s: float, api_key: str | None,
) -> RunResult:  # fmt: skip
    total = min(max_requests, int(rate * duration_s))
    result = RunResult(offered_rate=rate, duration_s=total / rate)
    async with client_for(url, api_key) as client:
        before = await batch_stats(client)
        start = time.perf_counter() + 0.2
        tasks = []
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = one_request(client, slices[i % len(slices)], scheduled, timeout_s)
            tasks.append(asyncio.create_task(task))
        result.outcomes = list(await asyncio.gather(*tasks))
        after = await batch_stats(client)
    batches = after[1] - before[1]
    result.batch_mean = (after[0] - before[0]) / batches if batches else None
    return result


def multipart_body(data: bytes, boundary: str = "lggseg-benchmark-boundary") -> tuple[bytes, str]:
    """A one-file ``multipart/form-data`` body (field ``file``) and its Content-Type."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"slice.tif\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}")  # fmt: skip


def sequential(
    url: str, slices: list[bytes], count: int, timeout_s: float, api_key: str | None
) -> list[Outcome]:
    """``count`` requests one after another on one keep-alive connection (bodies built first)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                            timeout=timeout_s)  # fmt: skip
    bodies = [multipart_body(data) for data in slices]
    extra = {"X-API-Key": api_key} if api_key else {}

    def one(i: int) -> Outcome:
        body, content_type = bodies[i % len(bodies)]
        start = time.perf_counter()
        try:
            connection.request("POST", "/v1/segment", body=body,
                               headers={"Content-Type": content_type, **extra})  # fmt: skip
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()  # reconnects on the next request
            return Outcome(None, time.perf_counter() - start, type(exc).__name__)
        latency = time.perf_counter() - start
        return Outcome(response.status, latency,
                       stages=parse_server_timing(response.getheader("Server-Timing")))

    try:
        for i in range(3):  # warm-up, not counted
            one(i)
        return [one(i) for i in range(count)]
    finally:
        connection.close()


def server_runtime(url: str, api_key: str | None) -> dict:
    headers = {"X-API-Key": api_key} if api_key else {}
    answer = httpx.get(f"{url}/v1/model", headers=headers, timeout=10)
    return dict(answer.json().get("runtime") or {}) if answer.status_code == 200 else {}


def bare_forward_s(checkpoint: Path, engine: str, precision: str, repeats: int = 10) -> float:
    """Median seconds of one batch-1 forward pass of ``engine`` in this process."""
    import torch

    sys.path.insert(0, str(REPO))
    from inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, engine=engine, precision=precision)
    size = predictor.preprocessing.image_size
    x = torch.zeros(1, 3, size, size)
    predictor.engine.forward(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.engine.forward(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_table(checkpoint: Path, runtime: dict, api_p50_s: float | None) -> str:
    sys.path.insert(0, str(REPO))
    from models.precision import cpu_supports_bf16

    torch_precision = "bf16" if cpu_supports_bf16() else "fp32"
    torch_s = bare_forward_s(checkpoint, "torch", torch_precision)
    lines = ["| bare forward, batch 1 | ms |", "|---|---|",
             f"| torch {torch_precision} | {ms(torch_s)} |"]  # fmt: skip
    if runtime.get("engine") and runtime.get("engine") != "torch":
        served = bare_forward_s(checkpoint, runtime["engine"], runtime["precision"])
        lines.append(f"| {runtime['engine']} {runtime['precision']} (served) | {ms(served)} |")
    if api_p50_s is not None:
        lines.append(f"| API sequential p50 / torch {torch_precision} | "
                     f"{api_p50_s / torch_s:.2f} (target <= 0.6) |")
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1000:.0f}"  # NaN -> "-"


def load_table(results: list[RunResult]) -> str:
    lines = [
        "| offered (req/s) | sent | achieved OK (req/s) | p50 ms | p95 ms | p99 ms "
        "| 503 p50 ms | non-200 answers | lost | mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ok = [o.latency_s for o in r.outcomes if o.status == 200]
        refused = [o.latency_s for o in r.outcomes if o.status == 503]
        other = Counter(str(o.status) for o in r.outcomes if o.status not in (200, None))
        lost = Counter(o.error for o in r.outcomes if o.status is None)
        other_text = ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "0"
        lost_text = str(sum(lost.values())) + (f" ({dict(lost)})" if lost else "")
        batch = "-" if r.batch_mean is None else f"{r.batch_mean:.1f}"
        lines.append(
            f"| {r.offered_rate:g} | {len(r.outcomes)} | {len(ok) / r.duration_s:.1f} "
            f"| {ms(percentile(ok, 50))} | {ms(percentile(ok, 95))} | {ms(percentile(ok, 99))} "
            f"| {ms(percentile(refused, 50))} | {other_text} | {lost_text} | {batch} |"
        )
    return "\n".join(lines)


def latency_table(outcomes: list[Outcome]) -> str:
    ok = [o.latency_s for o in outcomes if o.status == 200]
    failed = len(outcomes) - len(ok)
    return "\n".join(
        [
            "| sequential requests | p50 ms | p90 ms | p99 ms | mean ms | min ms | failed |",
            "|---|---|---|---|---|---|---|",
            f"| {len(outcomes)} | {ms(percentile(ok, 50))} | {ms(percentile(ok, 90))} "
            f"| {ms(percentile(ok, 99))} "
            f"| {ms(statistics.fmean(ok) if ok else float('nan'))} "
            f"| {ms(min(ok) if ok else float('nan'))} | {failed} |",
        ]
    )


def stage_table(outcomes: list[Outcome]) -> str:
    """Medians of the server's stages, and of the round trip less the network per request."""
    timed = [o for o in outcomes if o.status == 200 and "network" in o.stages]
    if not timed:
        return "(no Server-Timing header in the answers)"
    header = ["round trip", *[s for s in STAGES if s in timed[0].stages], "not in a stage",
              "round trip - network"]
    lines = ["| median ms | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    columns = [[o.latency_s for o in timed]]
    columns += [[o.stages.get(s, 0.0) for o in timed] for s in header[1:-2]]
    columns.append([o.latency_s - sum(o.stages.values()) for o in timed])
    columns.append([o.latency_s - o.stages["network"] for o in timed])
    cells = [f"{statistics.median(c) * 1000:.1f}" for c in columns]
    return "\n".join([*lines, f"| {len(timed)} requests | " + " | ".join(cells) + " |"])


def random_checkpoint(backbone: str, image_size: int, folder: Path) -> Path:
    """Random weights (seed 0) of the real architecture: the same compute, meaningless masks."""
    import torch

    from data.preprocessing import PreprocessingConfig
    from models.card import ModelCard
    from models.checkpoint import save_checkpoint
    from models.network import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone)  # type: ignore[arg-type]
    card = ModelCard(name=f"random-{backbone}-benchmark", version="0", model=cfg,
                     preprocessing=PreprocessingConfig(image_size=image_size))
    path = folder / f"random-{backbone}.safetensors"
    save_checkpoint(path, build_model(cfg), card)
    return path


def start_api(checkpoint: Path, env_overrides: dict[str, str]) -> Server:
    port = free_port()
    try:
        return start_server(
            [sys.executable, "-m", "inference.serve", "--port", str(port),
             "--checkpoint", str(checkpoint), "--no-access-log", "--log-level", "warning"],
            f"http://127.0.0.1:{port}/readyz", cwd=REPO, env={**os.environ, **env_overrides},
            name="the API",
        )  # fmt: skip
    except ServerError as exc:
        raise SystemExit(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/api_load.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared/data/lgg/kaggle_3m",
        help="kaggle_3m folder with the slices to send",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="a running API, e.g. http://127.0.0.1:8000")
    target.add_argument("--checkpoint", type=Path, help="start a server with this checkpoint")
    target.add_argument(
        "--random-model",
        choices=["resnet18", "resnet34", "resnet50"],
        help="start a server with random weights of this backbone",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=256,
        help="input size of the --random-model (default 256, the real one)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        default=[],
        help="offered requests/s of an open-loop run (repeat for several runs)",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run (60)")
    parser.add_argument("--max-requests", type=int, default=10_000, help="cap per run (10000)")
    parser.add_argument(
        "--latency",
        type=int,
        default=0,
        metavar="N",
        help="first measure N sequential single-slice requests (0: skip)",
    )
    parser.add_argument("--slices", type=int, default=64, help="distinct slices to cycle (64)")
    parser.add_argument(
        "--volumes",
        type=int,
        default=0,
        metavar="N",
        help="send one patient's slices as a zip to /v1/segment/volume N times (0: skip)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout, s (30)")
    parser.add_argument(
        "--pause", type=float, default=5.0, help="seconds between runs, so queues drain (5)"
    )
    parser.add_argument("--api-key", help="X-API-Key, if the server needs one")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="after the runs, time the bare forward pass of torch and of the served engine "
        "here (needs --checkpoint or --random-model)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for a server started here, e.g. LGGSEG_SERVE_QUEUE_LIMIT=16",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.rate and not args.latency and not args.volumes:
        args.latency, args.rate = 50, [20.0]
    slices = load_slices(args.data_dir, args.slices)
    server = None
    with tempfile.TemporaryDirectory(prefix="lggseg-bench-") as tmp:
        url = args.url
        if url is None:
            checkpoint = args.checkpoint or random_checkpoint(
                args.random_model or "resnet50", args.image_size, Path(tmp)
            )
            overrides = dict(item.split("=", 1) for item in args.server_env)
            server = start_api(checkpoint, overrides)
            url = server.url
        try:
            print(f"target {url}; {len(slices)} real slices; {os.cpu_count()} CPUs\n")
            runtime = server_runtime(url, args.api_key)
            if runtime:
                print(f"server runtime: {runtime.get('engine')} {runtime.get('precision')} on "
                      f"{runtime.get('cpu')} (flags: {', '.join(runtime.get('cpu_flags', []))})\n")
            api_p50 = None
            if args.latency:
                outcomes = sequential(url, slices, args.latency, args.timeout, args.api_key)
                print("Single-slice latency (end to end, one request at a time)\n")
                print(latency_table(outcomes) + "\n")
                print("Where a sequential request's time goes (the server's Server-Timing; "
                      "'not in a stage' = HTTP, multipart parsing, hand-offs, client)\n")
                print(stage_table(outcomes) + "\n")
                api_p50 = percentile([o.latency_s for o in outcomes if o.status == 200], 50)
            results = []
            for rate in args.rate:
                results.append(
                    asyncio.run(
                        open_loop(url, slices, rate, args.duration, args.max_requests,
                                  args.timeout, args.api_key)
                    )
                )  # fmt: skip
                time.sleep(args.pause)
            if results:
                print(f"Open-loop constant rate, {args.duration:g} s per run\n")
                print(load_table(results) + "\n")
            volume_s = None
            if args.volumes:
                blob, files = patient_zip(args.data_dir)
                volume_s = statistics.median(
                    volumes(url, blob, args.volumes, args.timeout * 10, args.api_key))
                print(f"Volume route: {len(files)} slices ({len(blob) / 2**20:.1f} MiB zip), "
                      f"median of {args.volumes}: {volume_s:.2f} s, "
                      f"{len(files) / volume_s:.1f} slices/s\n")  # fmt: skip
            if args.baseline and url != args.url:
                print("Bare forward pass in this process (the server idle)\n")
                print(baseline_table(checkpoint, runtime, api_p50) + "\n")
                if volume_s is not None:
                    bare = bare_volume_s(checkpoint, runtime, files)
                    print(f"predict_volume in this process, same slices: {bare:.2f} s, "
                          f"{len(files) / bare:.1f} slices/s; the volume route reaches "
                          f"{bare / volume_s:.0%} of it\n")  # fmt: skip
        finally:
            if server is not None:
                server.stop(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
