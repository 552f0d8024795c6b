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

from app import backend, card, exports, overlay, stack, uploads  # noqa: E402
from app.client import ApiClient  # noqa: E402
from app.settings import ViewerSettings  # noqa: E402
from app.units import area_label, volume_label  # noqa: E402
from data import kaggle3m, naming  # noqa: E402
from inference import metrics  # noqa: E402
from inference.outputs import mask_to_nifti, mask_to_png, nifti_to_gz_bytes  # noqa: E402

logger = logging.getLogger("app.viewer")

TITLE = "LGG brain-tumour segmentation viewer"
INTENDED_USE = (
    "**Research software, not for diagnostic use.** It outlines FLAIR abnormality (tumour) in "
    "lower-grade glioma MRI slices; every result must be checked by a qualified reader."
)
MODE_SLICES = "Upload slices"
MODE_VOLUME = "Upload a volume (NIfTI, sequences, DICOM)"
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
STACK_HEIGHT = 470  # canvas height (CSS px): with the slider, above the fold of 1440 x 900
CHART_PICK = "pick"
LAYER_PREDICTION = "Prediction"
LAYER_TRUTH = "Ground truth"
LAYER_AGREEMENT = "Agreement"
LAYER_UNCERTAINTY = "Uncertainty"
CHANNELS: dict[str, overlay.Channel] = {
    "FLAIR": "flair", "Pre-contrast": "pre", "Post-contrast": "post",
    "All three sequences (RGB)": "composite",
}  # fmt: skip
PAGE_CSS = """<style>
.block-container {padding-top: 2.2rem; padding-bottom: 1rem;}
h1 {font-size: 1.6rem !important; padding: 0 0 0.2rem 0 !important;}
[data-testid="stMetricValue"] {font-size: 1.5rem;}
</style>"""


@dataclass(frozen=True)
class Display:
    channel: overlay.Channel
    mode: overlay.Mode
    opacity: float
    layers: frozenset[str] = frozenset({LAYER_AGREEMENT})


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
        st.subheader("Layers")
        shown = {
            LAYER_AGREEMENT: st.checkbox(LAYER_AGREEMENT, True, key="layer_agreement",
                                        help="Filled: yellow where prediction and ground truth "
                                        "agree, vermillion prediction only, blue missed."),
            LAYER_PREDICTION: st.checkbox(LAYER_PREDICTION, False, key="layer_prediction",
                                         help="The predicted mask's outline (orange)."),
            LAYER_TRUTH: st.checkbox(LAYER_TRUTH, False, key="layer_truth",
                                    help="The expert mask's outline (sky blue)."),
            LAYER_UNCERTAINTY: st.checkbox(
                LAYER_UNCERTAINTY, False, key="layer_uncertainty",
                help="Purple where the model's answer for the left-right mirrored slice differs: "
                "one more pass of the model over every slice."),
        }
        st.subheader("Display")
        channel = st.selectbox("Sequence shown", list(CHANNELS), index=0, key="channel",
                               help="Drag on the image to change its window/level.")
        mode = st.radio("Agreement drawn as", ["Filled", "Contour"], index=0, horizontal=True,
                        key="mask_mode")
        opacity = st.slider("Mask opacity", 0.0, 1.0, 0.5 if mode == "Filled" else 1.0, 0.05)
    return Display(
        channel=CHANNELS[channel],
        mode="fill" if mode == "Filled" else "contour",
        opacity=float(opacity),
        layers=frozenset(name for name, on in shown.items() if on),
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


def page_slices(segmenter: backend.Segmenter, display: Display, settings: ViewerSettings) -> None:
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
        if not problems:
            example_patient(settings, segmenter)
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


@dataclass(frozen=True)
class StackCase:
    """A stack ready to show: slices, their predictions, optional truths and the grid."""

    title: str
    names: list[str]
    images: list[np.ndarray]
    predictions: list[backend.Segmentation]
    truths: list[np.ndarray] | None
    start: int
    start_reason: str
    spacing: tuple[float, float, float] | None = None
    affine: np.ndarray | None = None
    header: nib.Nifti1Header | None = None


def _memo(name: str, key: tuple[Any, ...], make: Callable[[], Any], keep: int = 4) -> Any:
    """This session's last ``keep`` results of ``make`` by ``key`` (display images, maps)."""
    cache: OrderedDict[tuple[Any, ...], Any] = st.session_state.setdefault(name, OrderedDict())
    if key not in cache:
        cache[key] = make()
    cache.move_to_end(key)
    while len(cache) > keep:
        cache.popitem(last=False)
    return cache[key]


def _uncertainty(segmenter: backend.Segmenter, case: StackCase, key: str) -> list[np.ndarray]:
    def make() -> list[np.ndarray]:
        with st.spinner("Segmenting the mirrored slices (uncertainty)...", show_time=True):
            return segmenter.uncertainty(case.images, [p.mask for p in case.predictions])

    maps: list[np.ndarray] = _memo("_uncertainty", (segmenter.key, key), make, keep=2)
    return maps


def stack_layers(
    case: StackCase, index: int, display: Display, uncertain: list[np.ndarray] | None
) -> list[tuple[np.ndarray, overlay.RGB, overlay.Mode]]:
    """The visible layers of slice ``index``, bottom to top."""
    pred = case.predictions[index].mask
    truth = case.truths[index] if case.truths is not None else None
    layers: list[tuple[np.ndarray, overlay.RGB, overlay.Mode]] = []
    if LAYER_AGREEMENT in display.layers and truth is not None:
        labels = overlay.agreement_labels(pred, truth)
        layers += [(labels == 1, overlay.TRUE_POSITIVE, display.mode),
                   (labels == 2, overlay.FALSE_POSITIVE, display.mode),
                   (labels == 3, overlay.FALSE_NEGATIVE, display.mode)]
    if LAYER_TRUTH in display.layers and truth is not None:
        layers.append((truth, overlay.GROUND_TRUTH, "contour"))
    if LAYER_PREDICTION in display.layers:
        layers.append((pred, overlay.PREDICTION, "contour"))
    if uncertain is not None:
        layers.append((uncertain[index], overlay.UNCERTAIN, "fill"))
    return layers


def stack_legend(display: Display, has_truth: bool) -> None:
    items: list[tuple[overlay.RGB, str]] = []
    if LAYER_AGREEMENT in display.layers and has_truth:
        items += [(overlay.TRUE_POSITIVE, "both (TP)"), (overlay.FALSE_POSITIVE, "prediction only"
                   " (FP)"), (overlay.FALSE_NEGATIVE, "missed truth (FN)")]
    if LAYER_TRUTH in display.layers and has_truth:
        items.append((overlay.GROUND_TRUTH, "ground truth"))
    if LAYER_PREDICTION in display.layers:
        items.append((overlay.PREDICTION, "prediction"))
    if LAYER_UNCERTAINTY in display.layers:
        items.append((overlay.UNCERTAIN, "uncertain (mirror disagrees)"))
    if items:
        legend(items)


def _chosen_slice(key: str, count: int, start: int) -> tuple[int, str]:
    """The slice to show (0-based) and the nonce that moves the browser's stack.

    Three inputs move it: the slice slider, a click on the area chart (both handled here before
    the stack is drawn) and the stack itself (handled after, from its report).
    """
    state = st.session_state
    slider_key, nonce_key, seen_key = f"slice-{key}", f"_nonce-{key}", f"_seen-{key}"
    seen = state.setdefault(seen_key, {"slider": start + 1, "chart": None})
    if slider_key not in state:
        state[slider_key] = start + 1
    nonce = int(state.setdefault(nonce_key, 0))
    chart = state.get(f"chart-{key}")
    picked = None
    if chart is not None:
        points = chart.get("selection", {}).get(CHART_PICK) or []
        picked = int(points[0]["slice"]) if points and "slice" in points[0] else None
    if picked is not None and picked != seen["chart"] and 1 <= picked <= count:
        state[slider_key] = picked
        nonce += 1
    seen["chart"] = picked
    if state[slider_key] != seen["slider"]:  # the slider (or the chart) moved it
        nonce += 1
    state[nonce_key] = nonce
    return int(state[slider_key]) - 1, str(nonce)


def show_stack(
    segmenter: backend.Segmenter, case: StackCase, display: Display, *, key: str,
    nonce_prefix: str = "",
) -> None:
    """A volume or a patient: the slice stack (image left, metrics right), the clickable
    per-slice area chart and the downloads."""
    count = len(case.names)
    index, nonce = _chosen_slice(key, count, case.start)
    uncertain = (_uncertainty(segmenter, case, key)
                 if LAYER_UNCERTAINTY in display.layers else None)
    left, right = st.columns([3, 2], gap="medium")
    with left:
        bases = _memo("_bases", (key, display.channel), lambda: [
            stack.png_data_url(overlay.display_image(im, display.channel)) for im in case.images])
        overlays = [
            stack.png_data_url(overlay.layers_rgba(case.images[k].shape[:2],
                                                   stack_layers(case, k, display, uncertain),
                                                   display.opacity))
            for k in range(count)]
        aspect = case.spacing[0] / case.spacing[1] if case.spacing else 1.0
        report = stack.slice_stack(bases, overlays, goto=(index, f"{nonce_prefix}:{nonce}"),
                                   key=f"stack-{key}", aspect=aspect,
                                   height=STACK_HEIGHT)
        seen_seq = st.session_state.setdefault(f"_seq-{key}", 0)
        if report is not None and int(report.get("seq", 0)) != seen_seq:
            st.session_state[f"_seq-{key}"] = int(report.get("seq", 0))
            index = max(0, min(count - 1, int(report.get("slice", index))))
            st.session_state[f"slice-{key}"] = index + 1
        st.session_state[f"_seen-{key}"]["slider"] = index + 1
        if count > 1:
            st.slider("Slice", 1, count, key=f"slice-{key}",
                      help=f"Starts at the slice with the {case.start_reason}. Scroll the image "
                      "with the mouse wheel or the arrow keys.")
        else:  # a slider needs two positions at least
            st.caption("Only one slice.")
    truth = case.truths[index] if case.truths is not None else None
    current = case.predictions[index]
    masks = np.stack([p.mask for p in case.predictions], axis=2)
    truth_volume = np.stack(case.truths, axis=2) if case.truths is not None else None
    rows = [slice_scores(n, p, t) for n, p, t in zip(
        case.names, case.predictions,
        case.truths if case.truths is not None else [None] * count, strict=True)]
    with right:
        st.markdown(f"**{case.title}** · slice {index + 1} of {count} · `{case.names[index]}`")
        stack_legend(display, truth is not None)
        show_stack_metrics(rows[index], current, case.spacing)
        st.divider()
        show_volume_metrics(case, masks, truth_volume, key)
        a, b = st.columns(2)
        a.download_button(
            "Mask volume (NIfTI)",
            data=nifti_to_gz_bytes(mask_to_nifti(masks, case.affine, case.header)),
            file_name=f"{naming.stem(case.title)}_predicted_mask.nii.gz",
            mime="application/gzip", key=f"nifti-{key}",
            help="uint8, 1 = tumour, H x W x slices on the same voxel grid (affine) as the input.",
        )
        b.download_button("Per-slice metrics (CSV)", data=exports.metrics_csv(rows),
                          file_name=f"{naming.stem(case.title)}_metrics.csv", mime="text/csv",
                          key=f"csv-{key}")
    area_chart(rows, index, key=key, spacing=case.spacing)


Metric = tuple[str, str, str | None]  # (label, value, help) of one st.metric


def metric_grid(items: Sequence[Metric], per_row: int = 3) -> None:
    """Metrics in rows of ``per_row``, left to right, with no gaps for the missing ones."""
    for start in range(0, len(items), per_row):
        for col, (label, value, help_text) in zip(st.columns(per_row),
                                                  items[start : start + per_row], strict=False):
            col.metric(label, value, help=help_text)


def show_stack_metrics(
    row: dict[str, Any], current: backend.Segmentation, spacing: tuple[float, float, float] | None
) -> None:
    items: list[Metric] = []
    if row.get("dice") is not None:
        items += [("Dice", f"{row['dice']:.3f}", "Overlap of prediction and ground truth on "
                   "this slice: 2|P∩G| / (|P|+|G|); both empty counts as 1."),
                  ("IoU", f"{row['iou']:.3f}", "|P∩G| / |P∪G|")]
    items.append(("Max probability", f"{current.max_probability:.2f}",
                  "The model's highest per-pixel tumour probability on this slice."))
    metric_grid(items)
    areas: list[Metric] = [("Predicted tumour area",
                            area_label(row["predicted_pixels"], spacing), None)]
    if row.get("truth_pixels") is not None:
        areas.append(("Ground-truth tumour area", area_label(row["truth_pixels"], spacing), None))
    metric_grid(areas, per_row=2)
    if spacing is None:
        st.caption("Areas in pixels: these files carry no pixel spacing.")


def show_volume_metrics(
    case: StackCase, masks: np.ndarray, truth: np.ndarray | None, key: str
) -> None:
    summary = backend.score(masks, truth)
    items: list[Metric] = []
    if summary.dice is not None:
        items.append(("Volumetric Dice", f"{summary.dice:.3f}",
                      "Dice over all slices together (every tumour voxel counts once)."))
    if truth is not None:
        distance = _memo("_hd95", (key, hashlib.sha256(masks.tobytes()).hexdigest()),
                         lambda: metrics.hd95(masks, truth, case.spacing))
        unit = "mm" if case.spacing is not None else "px"
        items.append((
            f"HD95 ({unit})", "-" if np.isnan(distance) else f"{distance:.1f} {unit}",
            "95th-percentile distance between the predicted and the ground-truth tumour "
            "surfaces over the whole volume" + ("" if case.spacing is not None else
                                                ", in pixels: no voxel spacing known")
            + "; - when either is empty."))
    items.append(("Slices", f"{len(case.names)}", None))
    metric_grid(items)
    volumes: list[Metric] = [("Predicted tumour volume",
                              volume_label(summary.predicted_pixels, case.spacing), None)]
    if summary.truth_pixels is not None:
        volumes.append(("Ground-truth tumour volume",
                        volume_label(summary.truth_pixels, case.spacing), None))
    metric_grid(volumes, per_row=2)


def area_chart(rows: Sequence[dict[str, Any]], current: int, *, key: str,
               spacing: tuple[float, float, float] | None) -> None:
    """Tumour area per slice; clicking a point shows that slice."""
    factor = 1.0 if spacing is None else spacing[0] * spacing[1]
    unit = "pixels" if spacing is None else "mm²"
    records = []
    for number, row in enumerate(rows, start=1):
        records.append({"slice": number, "mask": "prediction",
                        "area": round(row["predicted_pixels"] * factor, 1)})
        if row.get("truth_pixels") is not None:
            records.append({"slice": number, "mask": "ground truth",
                            "area": round(row["truth_pixels"] * factor, 1)})
    data = pd.DataFrame(records)
    colour = alt.Color(
        "mask:N",
        title=None,
        scale=alt.Scale(domain=["prediction", "ground truth"],
                        range=[overlay.hex_colour(overlay.PREDICTION),
                               overlay.hex_colour(overlay.GROUND_TRUTH)]),
        legend=alt.Legend(orient="top"),
    )
    pick = alt.selection_point(name=CHART_PICK, fields=["slice"], on="click", nearest=True)
    base = alt.Chart(data).encode(
        x=alt.X("slice:Q", title="slice (click to show it)"),
        y=alt.Y("area:Q", title=f"tumour area ({unit})"),
        color=colour,
        tooltip=["slice", "mask", "area"],
    )
    lines = base.mark_line()
    points = base.mark_point(filled=True, size=50).add_params(pick)
    rule = alt.Chart(pd.DataFrame({"slice": [current + 1]})).mark_rule(
        color="grey", strokeDash=[4, 3]).encode(x="slice:Q")
    st.altair_chart((lines + points + rule).properties(title="Tumour area per slice"),
                    height=280, width="stretch", on_select="rerun", selection_mode=CHART_PICK,
                    key=f"chart-{key}")


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
                if volume_file is None:
                    if mask_file is not None:
                        st.error("Add the volume this mask belongs to.")
                    return None
                return uploads.read_volume(
                    (volume_file.name, volume_file.getvalue()),
                    (mask_file.name, mask_file.getvalue()) if mask_file is not None else None)
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
            return uploads.read_dicom_study(
                uploaded(files), (truth.name, truth.getvalue()) if truth is not None else None)
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
        for name in ("slice-volume", "_seen-volume", "_nonce-volume", "_seq-volume"):
            st.session_state.pop(name, None)
        st.session_state["_volume_id"] = volume_id
    try:
        show_stack(segmenter, case, display, key="volume", nonce_prefix=volume_id)
    except backend.BackendError as exc:
        st.error(str(exc))


def _patient_scores() -> dict[str, dict[str, Any]]:
    """Volumetric scores of the patients segmented in this session, by patient id."""
    scores: dict[str, dict[str, Any]] = st.session_state.setdefault("_patient_scores", {})
    return scores


def _record(patient_id: str, predictions: Sequence[backend.Segmentation],
            truths: Sequence[np.ndarray]) -> None:
    masks = np.stack([p.mask for p in predictions], axis=2)
    summary = backend.score(masks, np.stack(truths, axis=2))
    _patient_scores()[patient_id] = {"dice": summary.dice, "predicted": summary.predicted_pixels}


def patient_table(patients: Sequence[kaggle3m.PatientRecord], root: Path,
                  model_card: dict[str, Any]) -> pd.DataFrame:
    """One row per patient, worst volumetric Dice first (patients not segmented yet last)."""
    scores = _patient_scores()
    rows = []
    for p in patients:
        known = scores.get(p.patient_id, {})
        part = card.split_of(model_card, p.patient_id)
        rows.append({
            "patient": p.patient_id,
            "volumetric Dice": known.get("dice"),
            "tumour volume (voxels)": int(truth_areas(str(root), p.patient_id).sum()),
            "predicted volume (voxels)": known.get("predicted"),
            "slices": len(p.slices),
            "model split": card.SPLIT_NAMES[part] if part else "not used",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    return table.sort_values("volumetric Dice", na_position="last", kind="stable",
                             ignore_index=True)


def _open_selected_row() -> None:
    """The table's row click: open that patient (a callback, before the page is drawn)."""
    event = st.session_state.get("patients_table")
    ids = st.session_state.get("_table_ids", [])
    rows = event.get("selection", {}).get("rows", []) if event is not None else []
    if rows and rows[0] < len(ids):
        st.session_state["patient"] = ids[rows[0]]


def _read_patient(patient: kaggle3m.PatientRecord) -> tuple[list[np.ndarray], list[np.ndarray],
                                                            list[bytes]]:
    images = [kaggle3m.read_image(s.image_path) for s in patient.slices]
    truths = [kaggle3m.read_mask(s.mask_path) for s in patient.slices]
    files = [s.image_path.read_bytes() for s in patient.slices]
    return images, truths, files


def page_dataset(segmenter: backend.Segmenter, root: Path | None, display: Display) -> None:
    """Patients found under the operator's ``LGGSEG_DATA_DIR``, picked from a list or the table:
    no path is ever typed, and messages never name anything but the folder's patients."""
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

    with st.sidebar:
        patient_id = st.selectbox("Patient", list(by_id), key="patient", format_func=label)
    patient = by_id[patient_id]
    part = card.split_of(model_card, patient_id)
    if part in ("train", "val"):
        st.caption(f"⚠ This patient was in the model's {card.SPLIT_NAMES[part]} set: its "
                   "scores overstate how well the model does on new patients.")
    # Everything about the patient is drawn in ``body``, a container keyed by the patient: the
    # next patient's container replaces it at once, so while that patient is segmented only
    # its notice shows, never the previous patient's metrics.
    body = st.container(key=f"body-{patient_id}")
    try:
        areas = truth_areas(str(root), patient_id)
        images, truths, files = _read_patient(patient)
    except (kaggle3m.DatasetError, OSError) as exc:
        logger.warning("cannot read patient %s: %s", patient_id, exc)
        body.error(f"Cannot read the files of patient {patient_id}; the reason is in the "
                   "viewer's log.")
        return
    items = list(zip(files, images, strict=True))
    names = [s.image_path.name for s in patient.slices]
    with body:
        try:
            cache = _session_predictions()
            notice = st.empty()  # always there, so the stack keeps its place (and its state)
            with notice.container():
                if any(f"{segmenter.key}:{hashlib.sha256(f).hexdigest()}" not in cache
                       for f in files):
                    st.info(f"Segmenting patient {patient_id} ({len(files)} slices)...")
                predictions = predict(segmenter, items, f"patient {patient_id}")
            notice.empty()
            _record(patient_id, predictions, truths)
            case = StackCase(patient_id, names, images, predictions, truths,
                             int(np.argmax(areas)), "largest ground-truth tumour")
            show_stack(segmenter, case, display, key=f"patient-{patient_id}")
        except backend.BackendError as exc:
            st.error(str(exc))
            return
    show_patient_table(segmenter, patients, root, model_card)


def show_patient_table(segmenter: backend.Segmenter, patients: Sequence[kaggle3m.PatientRecord],
                       root: Path, model_card: dict[str, Any]) -> None:
    head, button = st.columns([4, 1], vertical_alignment="bottom")
    head.subheader("Patients, worst volumetric Dice first")
    if button.button("Segment every patient", key="score_all",
                     help="Fills the Dice column for the whole folder (takes a while on a CPU)."):
        progress = st.progress(0.0, text="Segmenting every patient...")
        for done, p in enumerate(patients, start=1):
            if p.patient_id not in _patient_scores():
                images, truths, files = _read_patient(p)
                _record(p.patient_id, predict(segmenter, list(zip(files, images, strict=True)),
                                              f"patient {p.patient_id}"), truths)
            progress.progress(done / len(patients),
                              text=f"Segmented {done} of {len(patients)} patients")
        progress.empty()
    table = patient_table(patients, root, model_card)
    st.session_state["_table_ids"] = list(table["patient"])
    st.caption("Click a row to open that patient; click a column header to sort. Dice is shown "
               "for the patients segmented in this session.")
    st.dataframe(table, hide_index=True, width="stretch", height=280, key="patients_table",
                 on_select=_open_selected_row, selection_mode="single-row",
                 column_config={"volumetric Dice": st.column_config.NumberColumn(format="%.3f")})


def example_patient(settings: ViewerSettings, segmenter: backend.Segmenter) -> None:
    """The first screen's offer when a data folder is set: open one of its patients."""
    if settings.data_dir is None:
        return
    try:
        patients = scan(str(settings.data_dir))
    except kaggle3m.DatasetError:
        return
    if not patients:
        return
    test = card.split_of
    model_card = segmenter.card()
    example = next((p.patient_id for p in patients if test(model_card, p.patient_id) == "test"),
                   patients[0].patient_id)

    def open_example() -> None:
        st.session_state["mode"] = MODE_DATASET
        st.session_state["patient"] = example

    st.button("Try an example patient", key="example", type="primary", on_click=open_example,
              help=f"Opens patient {example} of the configured dataset folder.")


def main() -> None:
    st.set_page_config(page_title=TITLE, layout="wide")
    st.markdown(PAGE_CSS, unsafe_allow_html=True)
    settings = ViewerSettings()
    st.title(TITLE)
    st.warning(INTENDED_USE)
    with st.sidebar:
        modes = [MODE_SLICES, MODE_VOLUME, MODE_DATASET]
        mode = st.radio("What would you like to look at?", modes, key="mode")
    display = sidebar()
    try:
        segmenter = segmenter_for(settings)
    except backend.BackendError as exc:
        st.error(str(exc))
        return
    with st.sidebar:
        st.caption(f"Segmentation by the {segmenter.description}.")
        model_card_summary(segmenter.card())
    if mode == MODE_SLICES:
        page_slices(segmenter, display, settings)
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
