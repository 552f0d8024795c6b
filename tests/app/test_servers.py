"""app/servers.py: start a server, wait for its health URL, say why it did not come up, stop it."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from app.servers import Server, ServerError, answers, free_port, start_server, stop_all

IGNORES_SIGTERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('stubborn', flush=True); time.sleep(120)")


def http_server(port: int, folder: Path) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
            "--directory", str(folder)]


def test_start_waits_for_the_health_url_and_stop_ends_the_process(tmp_path: Path) -> None:
    (tmp_path / "health").write_text("ok")
    port = free_port()
    with start_server(http_server(port, tmp_path), f"http://127.0.0.1:{port}/health",
                      timeout=60, log=tmp_path / "server.log") as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert answers(f"{server.url}/health")
        assert not answers(f"{server.url}/missing")  # 404 is not ready
        assert server.process.poll() is None
    assert server.process.returncode == -signal.SIGTERM
    assert not answers(f"http://127.0.0.1:{port}/health")
    assert "GET /health" in server.output()  # its output went to the log


def test_a_server_that_dies_names_its_status_and_quotes_its_output(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('bad setting: LGGSEG_X'); sys.exit(3)"]
    with pytest.raises(ServerError) as caught:
        start_server(command, f"http://127.0.0.1:{free_port()}/", timeout=60,
                     log=tmp_path / "out.log", name="the API")
    message = str(caught.value)
    assert message.startswith("the API exited with status 3 during start-up")
    assert "bad setting: LGGSEG_X" in message and str(tmp_path / "out.log") in message


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('warming up', flush=True); "
               "time.sleep(120)"]
    server = Server.launch(command, f"http://127.0.0.1:{free_port()}/", log=tmp_path / "o.log")
    start = time.monotonic()
    with pytest.raises(ServerError, match=r"did not answer .* within 1 s.*\n.*warming up"):
        server.wait_ready(timeout=1)
    assert time.monotonic() - start < 30
    assert server.process.poll() is None  # wait_ready does not stop it; start_server does
    assert server.stop() == -signal.SIGTERM


def test_one_of_several_servers_dying_ends_the_wait_for_another(tmp_path: Path) -> None:
    waiting = Server.launch([sys.executable, "-c", "import time; time.sleep(120)"],
                            f"http://127.0.0.1:{free_port()}/", name="the viewer")
    dying = Server.launch([sys.executable, "-c", "raise SystemExit(4)"],
                          f"http://127.0.0.1:{free_port()}/", name="the API")
    try:
        with pytest.raises(ServerError, match="the API exited with status 4"):
            waiting.wait_ready(timeout=60, others=[dying])
    finally:
        stop_all([waiting, dying])
    assert waiting.process.returncode == -signal.SIGTERM and dying.process.returncode == 4


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    server = Server.launch([sys.executable, "-c", IGNORES_SIGTERM], "http://127.0.0.1:1/",
                           log=tmp_path / "o.log")
    deadline = time.monotonic() + 30
    while "stubborn" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)  # until the handler is installed
    assert server.stop(timeout=1) == -signal.SIGKILL
