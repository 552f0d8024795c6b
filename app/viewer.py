"""LGG brain-tumour segmentation viewer: ``streamlit run app/viewer.py``.

UI only. The model runs through ``app.backend`` (the API when an API URL is set, otherwise the
Predictor in this process); uploads are decoded by ``inference.decode`` from memory and are
never written to disk or cached across sessions. The pages and widgets are in ``app.views``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# ``streamlit run app/viewer.py`` puts app/ (not the repository) on sys.path.
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from app import backend  # noqa: E402
from app.settings import ViewerSettings  # noqa: E402
from app.views import dataset, slices, volume  # noqa: E402
from app.views.resources import segmenter_for  # noqa: E402
from app.views.sidebar import model_card_summary, sidebar  # noqa: E402

logger = logging.getLogger("app.viewer")

TITLE = "LGG brain-tumour segmentation viewer"
INTENDED_USE = (
    "**Research software, not for diagnostic use.** It outlines FLAIR abnormality (tumour) in "
    "lower-grade glioma MRI slices; every result must be checked by a qualified reader."
)
PAGE_CSS = """<style>
.block-container {padding-top: 2.2rem; padding-bottom: 1rem;}
h1 {font-size: 1.6rem !important; padding: 0 0 0.2rem 0 !important;}
[data-testid="stMetricValue"] {font-size: 1.5rem;}
</style>"""


def main() -> None:
    st.set_page_config(page_title=TITLE, layout="wide")
    st.markdown(PAGE_CSS, unsafe_allow_html=True)
    settings = ViewerSettings()
    st.title(TITLE)
    st.warning(INTENDED_USE)
    with st.sidebar:
        modes = [slices.MODE, volume.MODE, dataset.MODE]
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
    if mode == slices.MODE:
        slices.page_slices(segmenter, display, settings)
    elif mode == volume.MODE:
        volume.page_volume(segmenter, display)
    else:
        dataset.page_dataset(segmenter, settings.data_dir, display)


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
