"""Run the inference API with uvicorn.

    python -m inference.serve [--host 127.0.0.1] [--port 8000] [--checkpoint CKPT] [--workers 1]

Every other setting comes from ``LGGSEG_SERVE_*`` environment variables (see
``inference/api/settings.py``); the flags here override the matching variables. The model is
loaded once per worker process at start-up; ``/readyz`` turns 200 when it is serving.
On SIGTERM or Ctrl-C the server stops accepting connections, lets requests in flight finish
(up to ``--graceful-timeout`` seconds), then exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from inference.api.settings import ServeSettings, get_settings

PROTOCOL = "inference.api.protocol:GuardedHttpToolsProtocol"


def settings_errors(exc: ValidationError) -> str:
    """One line per invalid setting: its variable and what is wrong, never the value (a key)."""
    lines = []
    for error in exc.errors():
        name = "_".join(str(part) for part in error["loc"]).upper()
        lines.append(f"  LGGSEG_SERVE_{name}: {error['msg']}")
    return "\n".join(lines)


def connection_options(settings: ServeSettings) -> dict[str, Any]:
    """uvicorn options that keep the probes answering under connection abuse.

    No ``limit_concurrency``: uvicorn counts connections (idle ones too) and would refuse the
    probes with the work; the app bounds work (WorkLimitMiddleware) and memory (MemoryBudget).
    """
    return {
        "http": PROTOCOL,
        "timeout_keep_alive": settings.keep_alive_s,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 in containers)",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        metavar="CKPT",
        help="model weights (.safetensors, card beside it); default: "
        "$LGGSEG_SERVE_CHECKPOINT, else the bundled model",
    )
    parser.add_argument("--device", help="torch device (default: $LGGSEG_SERVE_DEVICE or cpu)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, each with its own model copy (default 1; on a "
        "small CPU, one worker with micro-batching is fastest)",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        metavar="N",
        help="requests in progress beyond N get 503 (default: "
        "$LGGSEG_SERVE_MAX_CONCURRENT_REQUESTS or 64); /healthz, /readyz and /metrics are "
        "never refused, and idle connections are not counted",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to let requests in flight finish on SIGTERM (default 30)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not log one line per request (method, path, status)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    # Flags travel as environment variables so that every worker process sees them.
    if args.checkpoint is not None:
        os.environ["LGGSEG_SERVE_CHECKPOINT"] = str(args.checkpoint.resolve())
    if args.device is not None:
        os.environ["LGGSEG_SERVE_DEVICE"] = args.device
    if args.limit_concurrency is not None:
        os.environ["LGGSEG_SERVE_MAX_CONCURRENT_REQUESTS"] = str(args.limit_concurrency)
    get_settings.cache_clear()
    try:
        settings = get_settings()  # fail fast on invalid LGGSEG_SERVE_* values, before binding
    except ValidationError as exc:
        print(f"error: invalid LGGSEG_SERVE_* setting:\n{settings_errors(exc)}", file=sys.stderr)
        return 2
    uvicorn.run(
        "inference.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_graceful_shutdown=args.graceful_timeout,
        **connection_options(settings),
        log_level=args.log_level,
        access_log=not args.no_access_log,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
