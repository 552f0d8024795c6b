"""Start a server in a subprocess, wait until its health URL answers, stop it cleanly.

The one start-and-wait helper of the demo (``app.demo``), the load benchmark
(``benchmarks/api_load.py``) and the tests that run real servers (the API, Streamlit):

    with start_server([sys.executable, "-m", "inference.serve", "--port", str(port)],
                      f"http://127.0.0.1:{port}/readyz", log=tmp / "api.log") as server:
        ...  # server.url, server.process

Standard library only, so it runs wherever the servers run.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

POLL_S = 0.3
OUTPUT_TAIL = 4000
"""Characters of a server's output quoted when it fails to start."""


class ServerError(RuntimeError):
    """A server that exited during start-up or did not answer in time; the message quotes the
    end of its output when it was written to a log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Server:
    """A started server process and the URL that says it is ready. Use :func:`start_server`
    (or :meth:`launch` then :meth:`wait_ready`, to start several at once)."""

    def __init__(self, process: subprocess.Popen[bytes], health_url: str, name: str,
                 log: Path | None, log_file: IO[bytes] | None) -> None:
        self.process = process
        self.health_url = health_url
        self.name = name
        self.log = log
        self._log_file = log_file

    @property
    def url(self) -> str:
        """``scheme://host:port`` of the health URL."""
        scheme, _, rest = self.health_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @classmethod
    def launch(
        cls,
        command: Sequence[str],
        health_url: str,
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        name: str | None = None,
    ) -> Server:
        """Start ``command`` without waiting. Its stdout and stderr go to ``log`` (a file,
        quoted in a start-up error) or, without one, to this process's own output."""
        log_file = log.open("wb") if log is not None else None
        try:
            process = subprocess.Popen(
                list(command), cwd=cwd, env=dict(env) if env is not None else None,
                stdout=log_file, stderr=subprocess.STDOUT if log_file else None,
            )  # fmt: skip
        except BaseException:
            if log_file is not None:
                log_file.close()
            raise
        return cls(process, health_url, name or Path(command[0]).name, log, log_file)

    def output(self) -> str:
        """What the server wrote so far (empty when its output is not logged to a file)."""
        if self.log is None or not self.log.is_file():
            return ""
        if self._log_file is not None:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float, others: Sequence[Server] = ()) -> None:
        """Poll the health URL until it answers 200. ServerError if this server (or one of
        ``others``, started alongside) exits first, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for server in (self, *others):
                if server.process.poll() is not None:
                    raise ServerError(server._failure(
                        f"exited with status {server.process.returncode} during start-up"))
            if answers(self.health_url):
                return
            if time.monotonic() > deadline:
                raise ServerError(self._failure(
                    f"did not answer {self.health_url} within {timeout:g} s"))
            time.sleep(POLL_S)

    def _failure(self, what: str) -> str:
        output = self.output()
        if self.log is None:
            return f"{self.name} {what} (its output is above)"
        tail = output[-OUTPUT_TAIL:] if output else "(no output)"
        return f"{self.name} {what}; the end of its output ({self.log}):\n{tail}"

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout`` seconds for a graceful exit, then SIGKILL; returns
        the exit status (negative: the signal that ended it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def stop_all(servers: Sequence[Server], timeout: float = 30.0) -> None:
    """Stop several servers side by side: SIGTERM to all first, then wait for each."""
    for server in servers:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    for server in servers:
        server.stop(timeout)


def start_server(
    command: Sequence[str],
    health_url: str,
    *,
    timeout: float = 180.0,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    name: str | None = None,
) -> Server:
    """Start ``command`` and return once ``health_url`` answers 200 (see :class:`Server`).
    On ServerError the process has been stopped."""
    server = Server.launch(command, health_url, cwd=cwd, env=env, log=log, name=name)
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop(timeout=10)
        raise
    return server
