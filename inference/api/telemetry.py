"""Prometheus metrics of the API (one registry per app, so tests can build many apps).

Labels never carry user data: the route *template* (``/v1/segment``), the method and the status.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30)


class ServiceMetrics:
    """The metrics this service exports at ``GET /metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "lggseg_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lggseg_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "lggseg_http_requests_in_flight",
            "HTTP requests being handled now.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "lggseg_batch_size",
            "Slices per forward pass of the model.",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "lggseg_queue_depth",
            "Slices admitted and not yet answered (queued or in the running batch).",
            registry=self.registry,
        )
        self.rejected = Counter(
            "lggseg_rejected",
            "Requests refused before reaching the model, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.memory_reserved = Gauge(
            "lggseg_memory_reserved_bytes",
            "Bytes reserved by requests in flight (bodies and decoded images).",
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "lggseg_model_ready", "1 when a model is loaded and serving.", registry=self.registry
        )


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware: in-flight gauge, request counter and latency histogram.

    The gauge is decremented in ``finally``, so a client that disconnects (or an exception)
    never leaves it raised.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_flight.dec()
            route = _route_template(scope)
            self.metrics.requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


def server_timing(stages: dict[str, float], batch_size: int | None = None) -> str:
    """A ``Server-Timing`` header (W3C) from seconds per stage, in milliseconds, e.g.
    ``decode;dur=1.62, queue;dur=0.31, network;dur=58.40;desc="batch of 1", encode;dur=0.41``.

    Browsers' developer tools draw it; ``benchmarks/api_load.py`` reads the network's share
    from it to tell the model's time from the API's.
    """
    parts = []
    for name, seconds in stages.items():
        part = f"{name};dur={seconds * 1000:.2f}"
        if name == "network" and batch_size is not None:
            part += f';desc="batch of {batch_size}"'
        parts.append(part)
    return ", ".join(parts)
