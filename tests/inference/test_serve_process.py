"""One real server: ``python -m inference.serve`` on 127.0.0.1, a random free port, SIGTERM."""

from __future__ import annotations

import gzip
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.inference.samples import brain_like, make_checkpoint, nifti_bytes, png_bytes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SECRET_NAME = "Jane-Doe-1961-04-02.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    checkpoint = make_checkpoint(tmp_path / "m.safetensors")
    port = free_port()
    env = {**os.environ, "LGGSEG_SERVE_MAX_BATCH": "4", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "inference.serve", "--port", str(port),
         "--checkpoint", str(checkpoint), "--graceful-timeout", "60"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{process.stdout.read() if process.stdout else ''}")
        time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("server not ready within 120 s")
    try:
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_real_server_serves_survives_slow_clients_and_stops_cleanly(
    server: tuple[subprocess.Popen[str], str],
) -> None:
    process, base = server
    port = int(base.rsplit(":", 1)[1])

    response = httpx.post(
        f"{base}/v1/segment",
        files={"file": (SECRET_NAME, png_bytes(brain_like(120, 100)))},
        timeout=30,
    )
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (100, 120)

    # A client that sends half a multipart body and stalls must not block anyone else.
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(
        b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Content-Type: multipart/form-data; boundary=B\r\n\r\n"
        b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + b"\x00" * 1000
    )
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    stalled.close()

    # A volume in flight when SIGTERM arrives still gets its answer; then a clean exit.
    volume = np.stack([brain_like(256, 256, s)[:, :, 1] for s in range(160)], axis=2)
    results: dict[str, httpx.Response] = {}

    def send_volume() -> None:
        results["volume"] = httpx.post(
            f"{base}/v1/segment/volume", files={"file": ("v", nifti_bytes(volume))}, timeout=300
        )

    sender = threading.Thread(target=send_volume)
    sender.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the volume is being handled (+1: this request)
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        if "lggseg_http_requests_in_flight 2.0" in metrics:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    sender.join(timeout=300)
    output, _ = process.communicate(timeout=60)

    assert results["volume"].status_code == 200
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(results["volume"].content))
    assert mask.shape == (256, 256, 160)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is SIGTERM's
    assert process.returncode in (0, -signal.SIGTERM), output
    assert output.index("Shutting down") < output.index('"POST /v1/segment/volume HTTP/1.1" 200')
    assert "Application shutdown complete" in output and "Finished server process" in output
    assert "Traceback" not in output
    assert SECRET_NAME not in output and "Jane" not in output  # file names are never logged
