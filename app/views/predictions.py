"""This session's predictions and derived images, kept in ``st.session_state`` (bounded).

Only results are kept, never the uploads themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import streamlit as st

from app import backend, uploads

PREDICTION_CACHE_SIZE = 400
BATCH = 8


def memo(name: str, key: Hashable, make: Callable[[], Any], keep: int) -> Any:
    """This session's last ``keep`` results of ``make`` by ``key``, under ``name``."""
    cache: OrderedDict[Any, Any] = st.session_state.setdefault(name, OrderedDict())
    if key not in cache:
        cache[key] = make()
    cache.move_to_end(key)
    while len(cache) > keep:
        cache.popitem(last=False)
    return cache[key]


def _session_predictions() -> OrderedDict[str, Any]:
    """Earlier predictions by (model, sha256 of the input bytes)."""
    cache: OrderedDict[str, Any] = st.session_state.setdefault("_predictions", OrderedDict())
    return cache


def _trim(cache: OrderedDict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        cache.move_to_end(key)
    while len(cache) > PREDICTION_CACHE_SIZE:
        cache.popitem(last=False)


def _slice_key(segmenter: backend.Segmenter, data: bytes) -> str:
    return f"{segmenter.key}:{hashlib.sha256(data).hexdigest()}"


def all_segmented(segmenter: backend.Segmenter, files: Sequence[bytes]) -> bool:
    """Whether this session already holds the predictions of every slice file."""
    cache = _session_predictions()
    return all(_slice_key(segmenter, data) in cache for data in files)


def predict(
    segmenter: backend.Segmenter, items: Sequence[tuple[bytes, np.ndarray]], what: str
) -> list[backend.Segmentation]:
    """Segment slices given as (file bytes, image), reusing this session's earlier answers."""
    cache = _session_predictions()
    keys = [_slice_key(segmenter, data) for data, _ in items]
    todo = [i for i, key in enumerate(keys) if key not in cache]
    if todo:
        progress = st.progress(0.0, text=f"Segmenting {what}...") if len(todo) > BATCH else None
        waiting = (st.spinner(f"Segmenting {what}...", show_time=True) if progress is None
                   else contextlib.nullcontext())
        with waiting:
            for start in range(0, len(todo), BATCH):
                chunk = todo[start : start + BATCH]
                answers = segmenter.segment([items[i] for i in chunk])
                for i, result in zip(chunk, answers, strict=True):
                    cache[keys[i]] = result
                if progress is not None:
                    progress.progress(min(1.0, (start + len(chunk)) / len(todo)),
                                      text=f"Segmenting {what}: {start + len(chunk)} of "
                                      f"{len(todo)} done")
        if progress is not None:
            progress.empty()
    results = [cache[key] for key in keys]
    _trim(cache, keys)
    return results


def predict_volume(
    segmenter: backend.Segmenter, volume: uploads.VolumeInput
) -> list[backend.Segmentation]:
    """Segment every slice of an uploaded volume, reusing this session's earlier answer."""
    cache = _session_predictions()
    key = f"{segmenter.key}:volume:{hashlib.sha256(volume.data).hexdigest()}"
    if key not in cache:
        with st.spinner(f"Segmenting {volume.depth} slices..."):
            cache[key] = segmenter.segment_volume(volume.data, volume.volume)
    result: list[backend.Segmentation] = cache[key]
    _trim(cache, [key])
    return result
