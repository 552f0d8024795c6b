"""Cohort report page of the viewer: browse the folders written by ``python -m analysis.cohort``.

UI only: reports are read by ``analysis.report.load_report``. The operator sets
``LGGSEG_REPORTS_DIR`` (a folder of report folders, or one report folder); users pick among the
reports found there and never type a path. The model is not loaded on this page.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# ``streamlit run app/viewer.py`` puts app/ (not the repository) on sys.path.
_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from analysis.report import ReportFolder, find_reports, load_report  # noqa: E402
from app.settings import ViewerSettings  # noqa: E402

logger = logging.getLogger("app.pages.cohort_report")

TITLE = "Cohort report: tumour shape and genomic subtypes"
NOT_CONFIGURED = (
    "No report folder is configured for this viewer. Run `python -m analysis.cohort --out "
    "REPORTS/<name> ...`, then the operator sets LGGSEG_REPORTS_DIR=REPORTS before starting it."
)


@st.cache_data(show_spinner="Reading the report...", max_entries=4)
def _load(folder: str, stamp: float) -> ReportFolder:
    return load_report(Path(folder))


def show(report: ReportFolder) -> None:
    summary = report.summary
    cols = st.columns(4)
    cols[0].metric("Patients", summary.get("patients", len(report.features)))
    cols[1].metric("Median Dice", f"{summary.get('median_dice', float('nan')):.3f}")
    cols[2].metric("Bonferroni p < 0.05", summary.get("significant_bonferroni_0.05", 0))
    cols[3].metric("Post-processing",
                   "largest component" if summary.get("largest_component") else "none")
    st.caption(f"Model {summary.get('model', '?')}. Volumes in voxels unless a spacing was "
               "given. Buda et al. 2019 (110 patients) report RNASeqCluster x BEVR p < 0.0002 "
               "and x MF p < 0.005.")
    st.subheader("Automatic vs expert features")
    st.dataframe(report.agreement, hide_index=True)
    st.subheader("Associations")
    source = st.radio("Masks", ["pred", "truth"], horizontal=True, key="source",
                      format_func=lambda s: "predicted" if s == "pred" else "expert")
    tests = report.associations[report.associations["source"] == source]
    st.dataframe(tests.sort_values("p_value"), hide_index=True)
    st.subheader("Figures")
    for figure in report.figures:
        st.image(str(figure), caption=figure.stem.replace("_", " "))
    st.subheader("Per-patient features")
    st.dataframe(report.features, hide_index=True)
    if report.html is not None:
        st.download_button("Download report.html (self-contained)", report.html.read_bytes(),
                           file_name="report.html", mime="text/html")


def main() -> None:
    st.set_page_config(page_title=TITLE, layout="wide")
    st.title(TITLE)
    st.warning("**Research software, not for diagnostic use.** The figures show patient images.")
    root = ViewerSettings().reports_dir
    if root is None:
        st.info(NOT_CONFIGURED)
        return
    reports = find_reports(root)
    if not reports:
        st.info("No cohort report was found in the folder configured for this viewer "
                "(LGGSEG_REPORTS_DIR); a report folder holds summary.json, features.csv, "
                "agreement.csv and associations.csv.")
        return
    names = {("." if path == root else path.name): path for path in reports}
    name = st.selectbox("Report", list(names), key="report")
    folder = names[name]
    try:
        report = _load(str(folder), (folder / "summary.json").stat().st_mtime)
    except (OSError, ValueError) as exc:
        logger.warning("cannot read report %s: %s", folder, exc)
        st.error(f"The report {name} cannot be read; the reason is in the viewer's log.")
        return
    show(report)


main()
