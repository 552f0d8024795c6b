"""The "Upload a volume" page: a NIfTI volume (or a zip of slices), the three sequence files
of a case, or a DICOM study, shown as a slice stack."""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from app import backend, uploads
from app.views.case import StackCase, forget_stack, show_stack
from app.views.inputs import LOSSY_WARNING, one, show_errors, uploaded
from app.views.layers import Display
from app.views.predictions import predict_volume

MODE = "Upload a volume (NIfTI, sequences, DICOM)"
VOLUME_NIFTI = "NIfTI volume or zip of slices"
VOLUME_SEQUENCES = "Three sequence files (NIfTI)"
VOLUME_DICOM = "DICOM study"


def volume_inputs() -> uploads.VolumeInput | None:
    """The sidebar's volume uploads, read in memory; None (with a message) until usable."""
    with st.sidebar:
        kind = st.radio("Volume as", [VOLUME_NIFTI, VOLUME_SEQUENCES, VOLUME_DICOM],
                        key="volume_kind")
        try:
            if kind == VOLUME_NIFTI:
                volume_file = st.file_uploader("Volume (NIfTI or zip of slices)", key="volume")
                mask_file = st.file_uploader("Ground-truth mask volume (optional)",
                                             key="volume_mask")
                volume = one(volume_file)
                if volume is None:
                    if mask_file is not None:
                        st.error("Add the volume this mask belongs to.")
                    return None
                return uploads.read_volume(volume, one(mask_file))
            if kind == VOLUME_SEQUENCES:
                files = st.file_uploader(
                    "<case>_0000 (pre-contrast), _0001 (FLAIR), _0002 (post-contrast) "
                    "and optionally <case>_mask", type=None, accept_multiple_files=True,
                    key="sequences")
                if not files:
                    return None
                return uploads.read_sequences(uploaded(files))
            files = st.file_uploader("DICOM files (.dcm) or a zip of the study",
                                     accept_multiple_files=True, key="dicom")
            truth = st.file_uploader("Ground-truth mask (NIfTI, optional)", key="dicom_mask")
            if not files:
                return None
            return uploads.read_dicom_study(uploaded(files), one(truth))
        except backend.BadUpload as exc:
            st.error(f"Cannot use these files: {exc}")
            return None


def page_volume(segmenter: backend.Segmenter, display: Display) -> None:
    volume = volume_inputs()
    if volume is None:
        st.info("Upload a NIfTI volume (axial slices along the third axis) or a zip of slices, "
                "the three sequence files of a case, or a DICOM study, in the sidebar.")
        return
    show_errors(volume.problems)
    if volume.lossy:
        st.warning(f"`{volume.name}` holds JPEG slices. " + LOSSY_WARNING)
    try:
        predictions = predict_volume(segmenter, volume)
    except backend.BackendError as exc:
        st.error(str(exc))
        return
    truths = None
    if volume.truth is not None:
        truths = [volume.truth[:, :, k] for k in range(volume.depth)]
        areas = volume.truth.reshape(-1, volume.depth).sum(axis=0)
        reason = "largest ground-truth tumour"
    else:
        areas = np.array([int(p.mask.sum()) for p in predictions])
        reason = "largest predicted tumour"
    case = StackCase(volume.name, [f"slice {k + 1}" for k in range(volume.depth)],
                     [volume.slice(k) for k in range(volume.depth)], predictions, truths,
                     int(np.argmax(areas)), reason, volume.spacing, volume.affine,
                     volume.header)
    volume_id = hashlib.sha256(volume.data).hexdigest()[:12]
    if st.session_state.get("_volume_id") != volume_id:  # another volume: start afresh
        forget_stack("volume")
        st.session_state["_volume_id"] = volume_id
    try:
        show_stack(segmenter, case, display, key="volume", content_id=volume_id)
    except backend.BackendError as exc:
        st.error(str(exc))
