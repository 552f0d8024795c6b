"""The FastAPI inference service: ``create_app()``; run it with ``python -m inference.serve``."""

from inference.api.app import create_app

__all__ = ["create_app"]
