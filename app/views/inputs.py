"""Reading the upload boxes in memory, and the messages about what was uploaded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from app import uploads

LOSSY_WARNING = (
    "JPEG's lossy compression changes pixel values, and so the model's answer: the same slice "
    "saved as TIFF or PNG can be segmented differently. Use the original TIFF, PNG or NIfTI "
    "for results you rely on."
)


def show_errors(problems: Sequence[uploads.UploadProblem]) -> None:
    for problem in problems:
        st.error(f"Cannot use {problem}")


def one(file: Any) -> uploads.Upload | None:
    """One ``st.file_uploader`` result as a (name, bytes) pair; None when nothing is there."""
    return (file.name, file.getvalue()) if file is not None else None


def uploaded(files: Any) -> list[uploads.Upload]:
    """``st.file_uploader`` results as (name, bytes) pairs, read in memory."""
    if not files:
        return []
    if not isinstance(files, list):
        files = [files]
    return [(f.name, f.getvalue()) for f in files]
