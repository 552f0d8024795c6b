"""The slice stack component (``app/slice_stack/index.html``): a canvas viewer in the page.

Every slice's display image and overlay go to the browser once, as PNG data URLs; scrolling
(wheel, arrow keys, PageUp / PageDown, Home / End), zoom (Ctrl+wheel, buttons), pan (Shift+drag)
and window/level (drag, on the image's pixels only, never on the overlay) happen there. The
component answers the slice on screen, ``{"slice": k, "seq": n}`` (0-based ``k``; ``seq`` counts
the browser's reports), so the page can show that slice's metrics. Python moves the stack with
``goto`` (a slice and a nonce: the browser jumps when the nonce changes). Served from this
repository's folder: nothing is fetched from a CDN.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import streamlit.components.v1 as components
from PIL import Image

FRONTEND = Path(__file__).resolve().parent / "slice_stack"
_component = components.declare_component("lggseg_slice_stack", path=str(FRONTEND))


def png_data_url(image: np.ndarray) -> str:
    """A uint8 ``H x W``, ``H x W x 3`` or ``H x W x 4`` image as a ``data:image/png`` URL."""
    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fingerprint(parts: Sequence[str]) -> str:
    """A short id of a list of data URLs (the browser reloads images only when it changes)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("ascii"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def slice_stack(
    bases: Sequence[str],
    overlays: Sequence[str | None],
    *,
    goto: tuple[int, str],
    key: str,
    height: int = 480,
    aspect: float = 1.0,
) -> dict[str, Any] | None:
    """Draw the stack; returns the browser's last report (None before its first one).

    ``bases`` and ``overlays`` are data URLs, one per slice (an overlay may be None);
    ``goto`` is (0-based slice, nonce); ``aspect`` the pixel height / width (row spacing over
    column spacing), so non-square pixels are drawn at their true shape.
    """
    value = _component(
        stack=fingerprint(bases), bases=list(bases),
        overlay_id=fingerprint([o or "" for o in overlays]), overlays=list(overlays),
        goto={"slice": int(goto[0]), "nonce": str(goto[1])}, height=int(height),
        aspect=float(aspect), key=key, default=None,
    )  # fmt: skip
    return value if isinstance(value, dict) else None
