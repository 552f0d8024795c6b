"""``python -m app.demo`` (what ``make demo`` runs): the API and the viewer together.

Starts ``python -m inference.serve`` and ``streamlit run app/viewer.py`` (pointed at that API,
from the repository root so ``.streamlit/config.toml`` applies, with the API's upload limit),
waits until both answer, prints the two URLs, and on Ctrl-C (or SIGTERM) stops both cleanly.
If either dies, the other is stopped too and the exit code is non-zero.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app.servers import Server, ServerError, stop_all
from inference.api.settings import ServeSettings
from models import BUNDLED_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.demo",
        description="Start the inference API and the Streamlit viewer on one machine "
        "(Ctrl-C stops both).",
    )
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_CHECKPOINT,
                        help="model weights (.safetensors with its .json card); "
                             "default: the bundled model")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address both servers bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--api-port", type=int, default=8000, help="API port (default 8000)")
    parser.add_argument("--viewer-port", type=int, default=8501,
                        help="viewer port (default 8501)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="a kaggle_3m folder the viewer can browse by patient "
                             "(default: $LGGSEG_DATA_DIR, else upload only)")
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="seconds to wait for both servers (default 180)")
    return parser


def upload_limit_mib(settings: ServeSettings) -> int:
    """The API's body limit in whole MiB (Streamlit's ``server.maxUploadSize`` unit)."""
    return max(1, settings.max_upload_bytes // 2**20)


def viewer_command(host: str, port: int, settings: ServeSettings) -> list[str]:
    """``streamlit run app/viewer.py`` with the settings of ``.streamlit/config.toml`` made
    explicit: the API's upload limit, XSRF protection on, no Deploy button."""
    return [
        sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "viewer.py"),
        "--server.headless", "true", "--server.address", host, "--server.port", str(port),
        "--server.maxUploadSize", str(upload_limit_mib(settings)),
        "--server.enableXsrfProtection", "true", "--client.toolbarMode", "viewer",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.checkpoint.is_file():
        print(
            f"error: no model at {args.checkpoint}. Train one with `python -m training.train "
            "--config configs/default.yaml --data-dir DIR --out runs/NAME` and pass "
            "--checkpoint runs/NAME/best.safetensors.",
            file=sys.stderr,
        )
        return 2
    api_url = f"http://{args.host}:{args.api_port}"
    viewer_url = f"http://{args.host}:{args.viewer_port}"
    env = {**os.environ, "LGGSEG_API_URL": api_url}
    if args.data_dir is not None:
        env["LGGSEG_DATA_DIR"] = str(args.data_dir)
    # Both start at once; their output goes to this terminal.
    api = Server.launch(
        [sys.executable, "-m", "inference.serve", "--host", args.host, "--port",
         str(args.api_port), "--checkpoint", str(args.checkpoint)],
        f"{api_url}/readyz", cwd=REPO, env=env, name="the API",
    )  # fmt: skip
    viewer = Server.launch(viewer_command(args.host, args.viewer_port, ServeSettings()),
                           f"{viewer_url}/_stcore/health", cwd=REPO, env=env, name="the viewer")
    servers = [api, viewer]
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        try:
            api.wait_ready(args.startup_timeout, others=[viewer])
            viewer.wait_ready(args.startup_timeout, others=[api])
        except ServerError as exc:
            if not stop:
                print(f"error: {exc}", file=sys.stderr)
            return 0 if stop else 1
        print(f"\n  API:    {api_url}  (OpenAPI docs at {api_url}/docs)\n"
              f"  Viewer: {viewer_url}\n\n  Ctrl-C stops both.\n", flush=True)
        while not stop:
            if any(s.process.poll() is not None for s in servers):
                print("error: a server stopped unexpectedly; stopping the other",
                      file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        stop_all(servers)
        print("stopped the API and the viewer", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
