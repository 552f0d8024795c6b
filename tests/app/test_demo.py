"""``python -m app.demo`` (``make demo``): both servers come up, answer, and stop on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from app.demo import upload_limit_mib, viewer_command
from app.servers import free_port
from inference.api.settings import ServeSettings

REPO = Path(__file__).resolve().parents[2]


def test_missing_model_gives_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.demo", "--checkpoint", str(tmp_path / "none.safetensors")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no model at" in result.stderr and "training.train" in result.stderr


@pytest.mark.slow
def test_demo_starts_both_servers_and_stops_them_on_ctrl_c(tiny_checkpoint: Path) -> None:
    api_port, viewer_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.demo", "--checkpoint", str(tiny_checkpoint),
         "--api-port", str(api_port), "--viewer-port", str(viewer_port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops both" in line:
                break
        output = "".join(lines)
        assert f"Viewer: http://127.0.0.1:{viewer_port}" in output, output[-2000:]
        assert f"API:    http://127.0.0.1:{api_port}" in output
        ready = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=10)
        assert ready.status_code == 200
        health = httpx.get(f"http://127.0.0.1:{viewer_port}/_stcore/health", timeout=10)
        assert health.status_code == 200
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert "stopped the API and the viewer" in rest
        for port in (api_port, viewer_port):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------- the viewer's Streamlit settings


def test_config_toml_matches_the_apis_upload_limit_and_keeps_xsrf_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LGGSEG_SERVE_MAX_UPLOAD_BYTES", raising=False)
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == upload_limit_mib(ServeSettings())
    assert config["server"]["enableXsrfProtection"] is True
    assert config["client"]["toolbarMode"] in ("viewer", "minimal")


def test_streamlit_started_from_the_repository_root_reads_config_toml(tmp_path: Path) -> None:
    """Where ``streamlit run app/viewer.py`` (the README, the demo, the Docker image) starts."""
    probe = ("from streamlit import config; print(config.get_option('server.maxUploadSize'), "
             "config.get_option('server.enableXsrfProtection'), "
             "config.get_option('client.toolbarMode'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["HOME"] = str(tmp_path)  # no ~/.streamlit/config.toml of this machine
    shown = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert shown.split() == ["64", "True", "viewer"]


def test_the_demo_gives_the_viewer_the_apis_upload_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LGGSEG_SERVE_MAX_UPLOAD_BYTES", str(16 * 2**20 + 5))
    command = viewer_command("127.0.0.1", 8501, ServeSettings())
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.maxUploadSize"] == "16"
    assert options["--server.enableXsrfProtection"] == "true"
    assert options["--client.toolbarMode"] == "viewer"
    assert command[4] == str(REPO / "app" / "viewer.py")
