"""LGG brain-tumour segmentation viewer: ``streamlit run app/viewer.py``.

UI only. The model runs through ``app.backend`` (the API when an API URL is set, otherwise the
Predictor in this process); uploads are decoded by ``inference.decode`` from memory and are
never written to disk or cached across sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ``streamlit run app/viewer.py`` puts app/ (not the repository) on sys.path.
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import altair as alt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import backend, card, exports, overlay, uploads  # noqa: E402
from app.client import ApiClient  # noqa: E402
from app.settings import ViewerSettings  # noqa: E402
from data import kaggle3m, naming  # noqa: E402
from inference.outputs import mask_to_nifti, mask_to_png, nifti_to_gz_bytes  # noqa: E402

logger = logging.getLogger("app.viewer")

TITLE = "LGG brain-tumour segmentation viewer"
INTENDED_USE = (
    "**Research software, not for diagnostic use.** It outlines FLAIR abnormality (tumour) in "
    "lower-grade glioma MRI slices; every result must be checked by a qualified reader."
)
MODE_SLICES = "Upload slices"
MODE_VOLUME = "Upload a NIfTI volume"
MODE_DATASET = "Browse a dataset folder"
VIEW_OVERLAY = "Overlay"
VIEW_AGREEMENT = "Agreement (TP / FP / FN)"
VIEW_SIDE = "Side by side"
LOSSY_WARNING = (
    "JPEG's lossy compression changes pixel values, and so the model's answer: the same slice "
    "saved as TIFF or PNG can be segmented differently. Use the original TIFF, PNG or NIfTI "
    "for results you rely on."
)
PREDICTION_CACHE_SIZE = 400
BATCH = 8


@dataclass(frozen=True)
class Display:
    channel: overlay.Channel
    mode: overlay.Mode
    opacity: float


# ---------------------------------------------------------------------------- resources


@st.cache_resource(show_spinner="Loading the model...")
def load_local(checkpoint: str, device: str, engine: str = "auto") -> backend.LocalSegmenter:
    return backend.LocalSegmenter.load(Path(checkpoint), device, engine)


@st.cache_resource(show_spinner="Connecting to the API...", ttl=300)
def connect_api(url: str, timeout_s: float, api_key: str | None) -> backend.ApiSegmenter:
    return backend.ApiSegmenter(ApiClient(url, timeout_s=timeout_s, api_key=api_key))


@st.cache_data(show_spinner="Scanning the dataset folder...", max_entries=4)
def scan(root: str) -> list[kaggle3m.PatientRecord]:
    return kaggle3m.scan_dataset(root, skip_bad=True)


@st.cache_data(show_spinner=False, max_entries=64)
def truth_areas(root: str, patient_id: str) -> np.ndarray:
    patient = next(p for p in scan(root) if p.patient_id == patient_id)
    return kaggle3m.tumour_pixels(patient)


def segmenter_for(settings: ViewerSettings) -> backend.Segmenter:
    """The configured API (the key goes to that address only), else the model in-process."""
    if settings.api_url:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return connect_api(settings.api_url, settings.api_timeout_s, key)
    return load_local(str(settings.checkpoint), settings.device, settings.engine)


def _session_predictions() -> OrderedDict[str, Any]:
    """This session's earlier predictions by (model, sha256 of the input bytes), bounded.

    Only predictions are kept, never the uploads themselves.
    """
    cache: OrderedDict[str, Any] = st.session_state.setdefault("_predictions", OrderedDict())
    return cache


def _trim(cache: OrderedDict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        cache.move_to_end(key)
    while len(cache) > PREDICTION_CACHE_SIZE:
        cache.popitem(last=False)


def predict(
    segmenter: backend.Segmenter, items: Sequence[tuple[bytes, np.ndarray]], what: str
) -> list[backend.Segmentation]:
    """Segment slices given as (file bytes, image), reusing this session's earlier answers."""
    cache = _session_predictions()
    keys = [f"{segmenter.key}:{hashlib.sha256(data).hexdigest()}" for data, _ in items]
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


# ---------------------------------------------------------------------------- page parts


def sidebar() -> Display:
    """Display choices only: where the model runs and which data may be browsed are the
    operator's settings (``LGGSEG_API_URL``, ``LGGSEG_DATA_DIR``), never page inputs."""
    with st.sidebar:
        st.header("Display")
        channel = st.radio(
            "Image", ["FLAIR", "All three sequences (RGB)"], index=0,
            help="FLAIR in grey, or pre-contrast / FLAIR / post-contrast as red / green / blue.",
        )
        mode = st.radio("Masks drawn as", ["Contour", "Filled"], index=0, horizontal=True)
        opacity = st.slider("Mask opacity", 0.0, 1.0, 0.6 if mode == "Filled" else 1.0, 0.05)
    return Display(
        channel="flair" if channel == "FLAIR" else "composite",
        mode="fill" if mode == "Filled" else "contour",
        opacity=float(opacity),
    )


def legend(items: Sequence[tuple[overlay.RGB, str]]) -> None:
    """Colour swatches with labels (static HTML built from constants only, no user text)."""
    swatches = "".join(
        f"<span style='display:inline-block;margin-right:1.2em'>"
        f"<span style='display:inline-block;width:0.9em;height:0.9em;border-radius:2px;"
        f"vertical-align:middle;background:{overlay.hex_colour(colour)}'></span> {label}</span>"
        for colour, label in items
    )
    st.markdown(swatches, unsafe_allow_html=True)


def model_card_summary(model_card: dict[str, Any]) -> None:
    with st.expander("Model card (what this model is, how it was trained and tested)"):
        lines = card.summary(model_card)
        st.markdown("\n".join(lines) if lines else "The model card is empty.")
        st.caption("Full card:")
        st.json(model_card, expanded=False)


def slice_scores(
    name: str, prediction: backend.Segmentation, truth: np.ndarray | None
) -> dict[str, Any]:
    scores = backend.score(prediction.mask, truth)
    row: dict[str, Any] = {"slice": name}
    row.update(scores.as_row())
    row["max_probability"] = round(prediction.max_probability, 4)
    return row


def show_metrics(row: dict[str, Any], *, wide: bool = False) -> None:
    """The slice's metrics: a 2-column block (beside the image) or one row of 5 (``wide``)."""
    cells = iter(st.columns(5) if wide else [c for _ in range(3) for c in st.columns(2)])
    if row.get("dice") is not None:
        next(cells).metric("Dice", f"{row['dice']:.3f}",
                           help="Overlap of prediction and ground truth: 2|P∩G| / (|P|+|G|); "
                           "1 is perfect. Both empty counts as 1.")
        next(cells).metric("IoU", f"{row['iou']:.3f}", help="|P∩G| / |P∪G|")
    with next(cells):
        st.metric("Predicted tumour area", f"{row['predicted_pixels']:,} px",
                  help="Pixels the model labels as tumour on this slice.")
        st.caption(f"{row['predicted_percent']:.2f} % of the slice")
    if row.get("truth_pixels") is not None:
        with next(cells):
            st.metric("Ground-truth tumour area", f"{row['truth_pixels']:,} px")
            st.caption(f"{row['truth_percent']:.2f} % of the slice")
    next(cells).metric("Max probability", f"{row['max_probability']:.2f}",
                       help="The model's highest per-pixel tumour probability on this slice.")
    if row.get("dice") is None:
        st.info("Add the ground-truth mask (same name ending in _mask) to see Dice and IoU.")
    elif row["truth_pixels"] == 0 and row["predicted_pixels"] == 0:
        st.caption("No tumour in either mask: a correct negative, counted as Dice 1.")


def show_slice(
    name: str,
    image: np.ndarray,
    prediction: backend.Segmentation,
    truth: np.ndarray | None,
    display: Display,
    row: dict[str, Any],
    *,
    key: str,
) -> None:
    """The selected slice: the chosen view on the left, its metrics and downloads on the right."""
    base = overlay.display_image(image, display.channel)
    pred = prediction.mask
    views = [VIEW_OVERLAY, VIEW_AGREEMENT, VIEW_SIDE] if truth is not None else [
        VIEW_OVERLAY, VIEW_SIDE]
    view = st.radio("View", views, horizontal=True, key="view")

    def download() -> None:
        st.download_button(
            "Download the predicted mask (PNG)",
            data=mask_to_png(pred),
            file_name=f"{naming.stem(name)}_predicted_mask.png",
            mime="image/png",
            key=f"png-{key}",
            help="0 = background, 255 = tumour, same size as the slice.",
        )

    if view == VIEW_SIDE:
        legend([(overlay.PREDICTION, "prediction")]
               + ([(overlay.GROUND_TRUTH, "ground truth")] if truth is not None else []))
        cols = st.columns(3)
        cols[0].image(base, caption="Image", width="stretch")
        cols[1].image(overlay.mask_overlay(base, pred, overlay.PREDICTION, mode=display.mode,
                                           opacity=display.opacity),
                      caption="Prediction", width="stretch")
        if truth is not None:
            cols[2].image(overlay.mask_overlay(base, truth, overlay.GROUND_TRUTH,
                                               mode=display.mode, opacity=display.opacity),
                          caption="Ground truth", width="stretch")
        else:
            cols[2].info("No ground-truth mask uploaded for this slice.")
        show_metrics(row, wide=True)
        download()
        return
    left, right = st.columns([3, 2], gap="large")
    with left:
        if view == VIEW_AGREEMENT and truth is not None:
            legend([(overlay.TRUE_POSITIVE, "true positive (both)"),
                    (overlay.FALSE_POSITIVE, "false positive (prediction only)"),
                    (overlay.FALSE_NEGATIVE, "false negative (missed ground truth)")])
            st.image(overlay.agreement_overlay(base, pred, truth, mode=display.mode,
                                               opacity=display.opacity),
                     caption=f"{name}: agreement of prediction and ground truth",
                     width="stretch")
        else:
            legend([(overlay.PREDICTION, "prediction")]
                   + ([(overlay.GROUND_TRUTH, "ground truth")] if truth is not None else []))
            st.image(overlay.prediction_and_truth(base, pred, truth, mode=display.mode,
                                                  opacity=display.opacity),
                     caption=f"{name}: prediction" + (" and ground truth" if truth is not None
                                                      else ""),
                     width="stretch")
    with right:
        show_metrics(row)
        download()


def show_errors(problems: Sequence[uploads.UploadProblem]) -> None:
    for problem in problems:
        st.error(f"Cannot use {problem}")


def uploaded(files: Any) -> list[uploads.Upload]:
    """``st.file_uploader`` results as (name, bytes) pairs, read in memory."""
    if not files:
        return []
    if not isinstance(files, list):
        files = [files]
    return [(f.name, f.getvalue()) for f in files]


# ---------------------------------------------------------------------------- modes


def page_slices(segmenter: backend.Segmenter, display: Display) -> None:
    st.markdown("Upload one or more MRI slices (TIFF, PNG or JPEG). Add a slice's ground-truth "
                "mask under the same name ending in `_mask` (e.g. `case_12.tif` and "
                "`case_12_mask.tif`) to compare, either here or in the second box.")
    a, b = st.columns(2)
    images = a.file_uploader("MRI slices (and their _mask files)", accept_multiple_files=True,
                             key="slices")
    masks = b.file_uploader("Ground-truth masks (optional)", accept_multiple_files=True,
                            key="masks")
    slices, problems = uploads.read_slices(uploaded(images), uploaded(masks))
    show_errors(problems)
    if not slices:
        return
    jpegs = [s.name for s in slices if s.lossy]
    if jpegs:
        listed = ", ".join(f"`{n}`" for n in jpegs[:3]) + (
            f" and {len(jpegs) - 3} more" if len(jpegs) > 3 else "")
        st.warning(f"{listed} {'is a JPEG' if len(jpegs) == 1 else 'are JPEGs'}. "
                   + LOSSY_WARNING)
    try:
        predictions = predict(segmenter, [(s.data, s.image) for s in slices],
                              f"{len(slices)} slice(s)")
    except backend.BackendError as exc:
        st.error(str(exc))
        return
    rows = [slice_scores(s.name, p, s.truth) for s, p in zip(slices, predictions, strict=True)]
    if len(slices) > 1:
        st.subheader("All uploaded slices")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        index = st.selectbox("Slice to view", range(len(slices)),
                             format_func=lambda i: slices[i].name)
    else:
        index = 0
    chosen = slices[index]
    st.subheader(chosen.name)
    show_slice(chosen.name, chosen.image, predictions[index], chosen.truth, display, rows[index],
               key=f"upload-{index}")
    st.download_button("Download the metrics (CSV)", data=exports.metrics_csv(rows),
                       file_name="lggseg_slice_metrics.csv", mime="text/csv", key="csv-slices")


def show_stack(
    title: str,
    names: Sequence[str],
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray] | None,
    start: int,
    display: Display,
    *,
    key: str,
    start_reason: str,
    segment_one: Callable[[int], backend.Segmentation],
    segment_all: Callable[[], list[backend.Segmentation]],
    affine: np.ndarray | None = None,
    header: nib.Nifti1Header | None = None,
) -> None:
    """A volume or a patient: summary, per-slice area chart, slider, the chosen slice.

    The chosen slice is segmented and drawn first; the other slices (for the summary and the
    chart, drawn above it) follow with a progress bar, so the page is useful at once.
    """
    summary_box, chart_box = st.container(), st.container()
    if len(names) > 1:
        number = st.slider("Slice", 1, len(names), start + 1, key=f"slice-{key}",
                           help=f"Starts at the slice with the {start_reason}.")
    else:  # a slider needs two positions at least
        number = 1
        st.caption("Only one slice.")
    index = number - 1
    truth = truths[index] if truths is not None else None
    current = segment_one(index)
    st.subheader(f"{title}: slice {number} of {len(names)}")
    show_slice(names[index], images[index], current, truth, display,
               slice_scores(names[index], current, truth), key=f"{key}-{index}")
    with summary_box:
        predictions = segment_all()
        rows = [slice_scores(n, p, t) for n, p, t in zip(
            names, predictions, truths if truths is not None else [None] * len(names),
            strict=True)]
        masks = np.stack([p.mask for p in predictions], axis=2)
        summary = backend.score(masks, np.stack(truths, axis=2) if truths else None)
        cols = st.columns(4)
        if summary.dice is not None:
            cols[0].metric("Volumetric Dice", f"{summary.dice:.3f}",
                           help="Dice over all slices together (every tumour pixel counts once).")
        cols[1].metric("Predicted tumour", f"{summary.predicted_pixels:,} px",
                       help="Pixels predicted as tumour, summed over all slices.")
        if summary.truth_pixels is not None:
            cols[2].metric("Ground-truth tumour", f"{summary.truth_pixels:,} px")
        cols[3].metric("Slices", f"{len(names)}")
    with chart_box:
        area_chart(rows, index)
    a, b = st.columns(2)
    a.download_button(
        "Download the predicted mask volume (NIfTI)",
        data=nifti_to_gz_bytes(mask_to_nifti(masks, affine, header)),
        file_name=f"{naming.stem(title)}_predicted_mask.nii.gz",
        mime="application/gzip",
        key=f"nifti-{key}",
        help="uint8, 1 = tumour, H x W x slices on the same voxel grid (affine) as the input.",
    )
    b.download_button("Download the per-slice metrics (CSV)", data=exports.metrics_csv(rows),
                      file_name=f"{naming.stem(title)}_metrics.csv", mime="text/csv",
                      key=f"csv-{key}")


def area_chart(rows: Sequence[dict[str, Any]], current: int) -> None:
    records = []
    for number, row in enumerate(rows, start=1):
        records.append({"slice": number, "mask": "prediction", "pixels": row["predicted_pixels"]})
        if row.get("truth_pixels") is not None:
            records.append({"slice": number, "mask": "ground truth",
                            "pixels": row["truth_pixels"]})
    data = pd.DataFrame(records)
    colour = alt.Color(
        "mask:N",
        title=None,
        scale=alt.Scale(domain=["prediction", "ground truth"],
                        range=[overlay.hex_colour(overlay.PREDICTION),
                               overlay.hex_colour(overlay.GROUND_TRUTH)]),
        legend=alt.Legend(orient="top"),
    )
    lines = alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("slice:Q", title="slice"),
        y=alt.Y("pixels:Q", title="tumour area (pixels)"),
        color=colour,
        tooltip=["slice", "mask", "pixels"],
    )
    rule = alt.Chart(pd.DataFrame({"slice": [current + 1]})).mark_rule(
        color="grey", strokeDash=[4, 3]).encode(x="slice:Q")
    st.altair_chart((lines + rule).properties(title="Tumour area per slice"), height=260,
                    width="stretch")


def page_volume(segmenter: backend.Segmenter, display: Display) -> None:
    st.markdown("Upload a NIfTI volume (`.nii` or `.nii.gz`, axial slices along the third axis) "
                "or a zip of slices, and optionally its ground-truth mask volume of the same "
                "size.")
    a, b = st.columns(2)
    volume_file = a.file_uploader("Volume (NIfTI or zip of slices)", key="volume")
    mask_file = b.file_uploader("Ground-truth mask volume (optional)", key="volume_mask")
    if volume_file is None:
        if mask_file is not None:
            st.error("Add the volume this mask belongs to.")
        return
    name = uploads.display_name(volume_file.name)
    try:
        volume = uploads.read_volume(
            (volume_file.name, volume_file.getvalue()),
            (mask_file.name, mask_file.getvalue()) if mask_file is not None else None,
        )
    except backend.BadUpload as exc:
        st.error(f"Cannot use `{name}`: {exc}")
        return
    show_errors(volume.problems)
    if volume.lossy:
        st.warning(f"`{name}` holds JPEG slices. " + LOSSY_WARNING)
    slices = [volume.slice(k) for k in range(volume.depth)]
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
    show_stack(name, [f"slice {k + 1}" for k in range(volume.depth)], slices, truths,
               int(np.argmax(areas)), display, key="volume", start_reason=reason,
               segment_one=lambda k: predictions[k], segment_all=lambda: predictions,
               affine=volume.affine, header=volume.header)


def page_dataset(segmenter: backend.Segmenter, root: Path | None, display: Display) -> None:
    """Patients found under the operator's ``LGGSEG_DATA_DIR``, picked from a list: no path is
    ever typed, and messages never name anything but the folder's patients and slices."""
    if root is None:
        st.info("No dataset folder is configured for this viewer. To browse a kaggle_3m folder "
                "patient by patient, the operator sets LGGSEG_DATA_DIR before starting it.")
        return
    try:
        patients = scan(str(root))
    except kaggle3m.DatasetError as exc:
        logger.warning("cannot browse LGGSEG_DATA_DIR: %s", exc)
        st.error("The dataset folder configured for this viewer cannot be browsed. The reason "
                 "is in the viewer's log; the operator sets the folder with LGGSEG_DATA_DIR.")
        return
    by_id = {p.patient_id: p for p in patients}
    model_card = segmenter.card()

    def label(pid: str) -> str:
        part = card.split_of(model_card, pid)
        used = f", {card.SPLIT_NAMES[part]} patient of this model" if part else ""
        return f"{pid} ({len(by_id[pid].slices)} slices{used})"

    patient_id = st.selectbox("Patient", list(by_id), key="patient", format_func=label)
    patient = by_id[patient_id]
    part = card.split_of(model_card, patient_id)
    if part in ("train", "val"):
        st.warning(f"This patient was in the model's {card.SPLIT_NAMES[part]} set: its scores "
                   "overstate how well the model does on new patients. Test patients give a "
                   "fair picture.")
    try:
        areas = truth_areas(str(root), patient_id)
        images = [kaggle3m.read_image(s.image_path) for s in patient.slices]
        truths = [kaggle3m.read_mask(s.mask_path) for s in patient.slices]
        files = [s.image_path.read_bytes() for s in patient.slices]
    except (kaggle3m.DatasetError, OSError) as exc:
        logger.warning("cannot read patient %s: %s", patient_id, exc)
        st.error(f"Cannot read the files of patient {patient_id}; the reason is in the "
                 "viewer's log.")
        return
    items = list(zip(files, images, strict=True))
    names = [s.image_path.name for s in patient.slices]
    try:
        show_stack(
            patient_id, names, images, truths, int(np.argmax(areas)), display,
            key=f"patient-{patient_id}", start_reason="largest ground-truth tumour",
            segment_one=lambda k: predict(segmenter, [items[k]], names[k])[0],
            segment_all=lambda: predict(segmenter, items, f"the other slices of {patient_id}"),
        )
    except backend.BackendError as exc:
        st.error(str(exc))


def main() -> None:
    st.set_page_config(page_title=TITLE, layout="wide")
    settings = ViewerSettings()
    st.title(TITLE)
    st.warning(INTENDED_USE)
    display = sidebar()
    try:
        segmenter = segmenter_for(settings)
    except backend.BackendError as exc:
        st.error(str(exc))
        return
    st.caption(f"Segmentation by the {segmenter.description}.")
    model_card_summary(segmenter.card())
    modes = [MODE_SLICES, MODE_VOLUME, MODE_DATASET]
    mode = st.radio("What would you like to look at?", modes, horizontal=True, key="mode")
    if mode == MODE_SLICES:
        page_slices(segmenter, display)
    elif mode == MODE_VOLUME:
        page_volume(segmenter, display)
    else:
        page_dataset(segmenter, settings.data_dir, display)


def run() -> None:
    """The page, with a last line of defence: an unexpected error becomes a message, never a
    traceback in front of the user (the log keeps the details)."""
    try:
        main()
    except Exception:  # the UI boundary (st.stop and st.rerun are BaseExceptions, not caught)
        logger.exception("unexpected error while drawing the viewer")
        st.error("Something went wrong while drawing this page. The details are in the "
                 "viewer's log; please report them. Nothing you uploaded was stored.")


run()
