"""``python -m inference.serve`` argument handling (uvicorn itself is replaced here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inference import serve
from inference.api.settings import get_settings


def test_flags_reach_uvicorn_and_every_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.delenv("LGGSEG_SERVE_CHECKPOINT", raising=False)
    checkpoint = tmp_path / "m.safetensors"
    try:
        code = serve.main(["--port", "8123", "--checkpoint", str(checkpoint), "--workers", "2"])
        assert code == 0
        assert get_settings().checkpoint == checkpoint.resolve()  # workers read the env var
    finally:
        monkeypatch.delenv("LGGSEG_SERVE_CHECKPOINT", raising=False)
        get_settings.cache_clear()
    (call,) = calls
    assert call["app"] == "inference.api.app:create_app" and call["factory"] is True
    assert call["port"] == 8123 and call["host"] == "127.0.0.1" and call["workers"] == 2
    assert call["timeout_graceful_shutdown"] == 30.0


def test_invalid_settings_fail_before_binding(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(serve.uvicorn, "run", lambda *a, **k: pytest.fail("must not start"))
    monkeypatch.setenv("LGGSEG_SERVE_MAX_BATCH", "0")
    try:
        assert serve.main([]) == 2
    finally:
        get_settings.cache_clear()
    assert "LGGSEG_SERVE_MAX_BATCH" in capsys.readouterr().err


def test_limit_concurrency_bounds_work_not_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's limit_concurrency counts connections and refuses /healthz with the rest."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **kw: calls.append(kw))
    try:
        assert serve.main(["--limit-concurrency", "7"]) == 0
        assert get_settings().max_concurrent_requests == 7
    finally:
        monkeypatch.delenv("LGGSEG_SERVE_MAX_CONCURRENT_REQUESTS", raising=False)
        get_settings.cache_clear()
    (call,) = calls
    assert "limit_concurrency" not in call
    assert call["http"] == "inference.api.protocol:GuardedHttpToolsProtocol"
    assert call["timeout_keep_alive"] == 5


def test_non_ascii_api_key_is_refused_at_startup_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(serve.uvicorn, "run", lambda *a, **k: pytest.fail("must not start"))
    monkeypatch.setenv("LGGSEG_SERVE_API_KEY", "clé-secrète")
    try:
        assert serve.main([]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "LGGSEG_SERVE_API_KEY" in err and "ASCII" in err
    assert "secr" not in err  # the key itself is never printed
