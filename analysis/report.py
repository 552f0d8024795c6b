"""Figures and the self-contained ``report.html`` of a cohort analysis (``analysis.cohort``).

Every figure is written to ``OUT/figures/`` as PNG (the viewer's report page shows them) and
embedded in ``OUT/report.html`` as base64, so the report is one file. Figures are drawn on
``matplotlib.figure.Figure`` objects (no pyplot state, no GUI backend).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.clinical import Join
from analysis.shape import SHAPE_FEATURES
from data.atomic import atomic_write_bytes
from data.kaggle3m import PatientRecord, read_image, read_mask
from inference.postprocessing import keep_largest_component

FIGURES = "figures"
LABELS = {
    "voxels": "tumour voxels", "ml": "tumour volume (ml)", "bevr": "BEVR", "asd": "ASD",
    "mf": "MF", "extent": "extent", "solidity": "solidity", "eccentricity": "eccentricity",
}
EXPERT, MODEL = "#1b9e3a", "#e41a1c"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def bland_altman(features: pd.DataFrame, names: Sequence[str]) -> bytes:
    """One Bland-Altman panel per feature: mean of the two values vs predicted - expert."""
    cols = 4
    rows = math.ceil(len(names) / cols)
    figure = Figure(figsize=(4 * cols, 3.3 * rows), layout="constrained")
    for i, name in enumerate(names):
        ax = figure.add_subplot(rows, cols, i + 1)
        pred, truth = features[f"pred_{name}"], features[f"truth_{name}"]
        both = pred.notna() & truth.notna()
        mean, diff = (pred[both] + truth[both]) / 2, pred[both] - truth[both]
        ax.scatter(mean, diff, s=12, alpha=0.7, color="#377eb8")
        if both.sum() > 1:
            bias, sd = float(diff.mean()), float(diff.std(ddof=1))
            for level, style in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
                ax.axhline(level, color="grey", linestyle=style, linewidth=1)
        ax.set_title(f"{LABELS.get(name, name)} (n={int(both.sum())})", fontsize=10)
        ax.set_xlabel("mean of predicted and expert", fontsize=8)
        ax.set_ylabel("predicted - expert", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.suptitle("Bland-Altman: automatic vs expert masks (bias, bias +/- 1.96 SD)")
    return _png(figure)


def box_plot(features: pd.DataFrame, variables: pd.DataFrame, pair: Mapping[str, Any]) -> bytes:
    """The feature across the variable's categories, from predicted and from expert masks."""
    name, variable = str(pair["feature"]), str(pair["variable"])
    figure = Figure(figsize=(7, 3.4), layout="constrained")
    groups = variables[variable].reindex(features.index)
    for i, source in enumerate(("pred", "truth")):
        ax = figure.add_subplot(1, 2, i + 1)
        values = features[f"{source}_{name}"]
        both = values.notna() & groups.notna()
        levels = sorted(groups[both].unique())
        data = [values[both & (groups == level)].to_numpy() for level in levels]
        ax.boxplot(data, tick_labels=[f"{level:g}" for level in levels])
        ax.set_xlabel(f"{variable} (n={int(both.sum())}, {int((~both).sum())} missing)",
                      fontsize=8)
        ax.set_ylabel(LABELS.get(name, name), fontsize=8)
        ax.set_title("predicted masks" if source == "pred" else "expert masks", fontsize=9)
        ax.tick_params(labelsize=7)
    figure.suptitle(f"{LABELS.get(name, name)} by {variable}: {pair['test']} "
                    f"p={pair['p_value']:.2g} (predicted)", fontsize=10)
    return _png(figure)


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str) -> bytes:
    """FLAIR with the expert (green) and predicted (red) contours."""
    figure = Figure(figsize=(3.2, 3.4))
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(image, cmap="gray")
    for mask, colour in ((truth, EXPERT), (pred, MODEL)):
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return _png(figure)


def gallery_items(
    records: Sequence[Mapping[str, Any]], patients: Mapping[str, PatientRecord], out: Path,
    largest_component: bool, count: int,
) -> list[dict[str, Any]]:
    """Overlays of the ``count`` patients with the lowest Dice, on their largest tumour slice."""
    rows = [r for r in records if r["row"].get("dice") is not None
            and r.get("overlay_slice") is not None]
    rows.sort(key=lambda r: float(r["row"]["dice"]))
    items = []
    for record in rows[:count]:
        patient = patients[record["patient"]]
        k = int(record["overlay_slice"])
        with np.load(out / "patients" / f"{patient.patient_id}.npz") as stored:
            shape = tuple(int(n) for n in stored["shape"])
            raw = np.unpackbits(stored["bits"], count=int(np.prod(shape))).reshape(shape)
        pred = keep_largest_component(raw.astype(np.uint8)) if largest_component else raw
        piece = patient.slices[k]
        image = read_image(piece.image_path)[:, :, 1]  # FLAIR
        truth = read_mask(piece.mask_path)
        dice = float(record["row"]["dice"])
        title = f"{patient.patient_id}\nslice {piece.index}, Dice {dice:.2f}"
        items.append({"patient": patient.patient_id, "dice": dice, "slice": piece.index,
                      "png": overlay(image, truth, pred[:, :, k], title)})
    return items


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:.2e}" if 0 < abs(value) < 10 ** -digits else f"{value:.{digits}f}"
        return str(value)

    return frame.to_html(index=False, escape=True, formatters=dict.fromkeys(frame.columns, fmt),
                         border=0, classes="t")


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table.t{border-collapse:collapse;font-size:12px;margin:0.5em 0}
table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
.gallery img{margin:4px} .note{color:#555;font-size:13px} img{max-width:100%}
"""


def strongest_pairs(tests: pd.DataFrame, count: int) -> pd.DataFrame:
    """The ``count`` feature x variable pairs with the smallest p (predicted masks, categorical
    tests), each pair once."""
    usable = tests[(tests["source"] == "pred") & tests["p_value"].notna()
                   & tests["test"].isin(["fisher", "kruskal"])]
    ranked = usable.sort_values("p_value").drop_duplicates(["feature", "variable"])
    return ranked.head(count)


def write_report(
    out: Path, features: pd.DataFrame, agree: pd.DataFrame, tests: pd.DataFrame, joined: Join,
    summary: Mapping[str, Any], gallery: Sequence[Mapping[str, Any]], top: int,
) -> Path:
    """Write the figures and ``out/report.html``; returns the report's path."""
    figures = out / FIGURES
    for old in figures.glob("*.png") if figures.is_dir() else []:
        old.unlink()
    names = list(agree["feature"])
    ba = bland_altman(features, names)
    atomic_write_bytes(figures / "bland_altman.png", ba)
    pairs = strongest_pairs(tests, top)
    boxes = []
    for i, pair in enumerate(pairs.to_dict("records")):
        png = box_plot(features.set_index("patient"), joined.table, pair)
        atomic_write_bytes(figures / f"box_{i + 1:02d}_{pair['feature']}_{pair['variable']}.png",
                           png)
        boxes.append(png)
    for item in gallery:
        atomic_write_bytes(figures / f"worst_{item['patient']}.png", item["png"])

    shown = ["feature", "source", "variable", "test", "n", "n_missing", "p_value",
             "p_bonferroni", "p_bh"]
    paper = tests[tests["variable"].isin(["RNASeqCluster"]) & tests["feature"].isin(
        ["bevr", "mf", "asd"]) & (tests["test"] == "fisher")]
    missing = tests.drop_duplicates("variable").set_index("variable")["missing_variable"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Cohort report: {html.escape(str(summary['data_dir']))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Cohort report: tumour shape and genomic subtypes</h1>",
        "<p class='note'><b>Research software, not for diagnostic use.</b> This report shows "
        "patient images: keep it with the data.</p>",
        f"<p>{summary['patients']} patients from <code>{html.escape(str(summary['data_dir']))}"
        f"</code>; model <code>{html.escape(str(summary['model']))}</code>; post-processing: "
        f"{'largest 3-D component' if summary['largest_component'] else 'none'}; "
        f"median Dice {summary['median_dice']:.3f} (mean {summary['mean_dice']:.3f}).</p>",
        _seen_paragraph(summary),
        _missing_paragraph(summary, missing),
        "<h2>Automatic vs expert features</h2>",
        "<p class='note'>Spearman's rho; ICC(2,1): two-way random, absolute agreement, single "
        "measure (ICC(3,1): consistency); Bland-Altman bias and limits (predicted - expert). "
        "Volumes are in voxels: kaggle_3m TIFFs carry no voxel spacing.</p>",
        _table(agree), _img(ba, "Bland-Altman plots"),
        "<h2>Strongest associations (predicted masks)</h2>",
        "<p class='note'>fisher: the feature split at its median vs the categories, Fisher / "
        "Freeman-Halton exact test; kruskal: Kruskal-Wallis; spearman: numeric variables. "
        "Bonferroni and Benjamini-Hochberg within each (masks, test) family; n counts the "
        "patients with both values, n_missing the others. Buda et al. 2019 (110 patients, "
        "automatic masks) report RNASeqCluster x BEVR p &lt; 0.0002 and RNASeqCluster x MF "
        "p &lt; 0.005 (Fisher, Bonferroni threshold 0.005).</p>",
        _table(tests[tests["source"] == "pred"].sort_values("p_value").head(20)[shown]),
        *(_img(png, "box plot") for png in boxes),
        "<h2>The paper's pairs: RNASeqCluster x BEVR, MF, ASD</h2>",
        _table(paper[shown]) if len(paper) else "<p>RNASeqCluster is not in the table.</p>",
        "<h2>Worst-agreeing patients</h2>",
        f"<p class='note'>The {len(gallery)} lowest Dice: FLAIR of the slice with the largest "
        "expert tumour, expert contour green, predicted contour red.</p>",
        "<div class='gallery'>", *(_img(g["png"], str(g["patient"])) for g in gallery), "</div>",
        "<h2>Feature definitions</h2>", _definitions(),
        "<h2>All tests</h2>",
        _table(tests.sort_values(["source", "test", "p_value"])[shown + ["note"]]),
        "<h2>Per-patient features</h2>", _table(features),
        "</body></html>",
    ]
    path = out / "report.html"
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path


def _seen_paragraph(summary: Mapping[str, Any]) -> str:
    seen = summary.get("seen_by_model") or {}
    if not sum(seen.values()):
        return ""
    return (f"<p><b>{seen.get('train', 0)} training and {seen.get('val', 0)} validation "
            "patients of this model are in the cohort</b> (column model_split): its masks on "
            "them are optimistic. Median Dice on the other patients: "
            f"{summary.get('median_dice_unseen', float('nan')):.3f}.</p>")


def _missing_paragraph(summary: Mapping[str, Any], missing: pd.Series) -> str:
    lines = [f"{html.escape(str(v))}: {int(n)}" for v, n in missing.items() if n]
    text = "<p class='note'>Missing values (patients without the variable, excluded from that " \
           "variable's tests and counted in n_missing): " + (", ".join(lines) or "none") + "."
    if summary["without_clinical_row"]:
        text += f" Folders without a data.csv row: {len(summary['without_clinical_row'])}."
    if summary["clinical_rows_without_folder"]:
        text += (f" data.csv rows without a folder: "
                 f"{len(summary['clinical_rows_without_folder'])}.")
    if summary["failed"]:
        text += f" Patients that failed: {len(summary['failed'])}."
    return text + "</p>"


def _definitions() -> str:
    from analysis import shape

    doc = shape.__doc__ or ""
    return f"<pre style='white-space:pre-wrap;font-size:12px'>{html.escape(doc)}</pre>" + (
        f"<p class='note'>Shape features: {', '.join(SHAPE_FEATURES)}.</p>")


# ---------------------------------------------------------------------------- reading back

REPORT_FILES = ("summary.json", "features.csv", "agreement.csv", "associations.csv")


@dataclass(frozen=True)
class ReportFolder:
    """A finished cohort analysis (an ``analysis.cohort`` OUT folder), read back."""

    path: Path
    summary: dict[str, Any]
    features: pd.DataFrame
    agreement: pd.DataFrame
    associations: pd.DataFrame
    figures: list[Path]

    @property
    def html(self) -> Path | None:
        path = self.path / "report.html"
        return path if path.is_file() else None


def is_report(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in REPORT_FILES)


def find_reports(root: Path) -> list[Path]:
    """``root`` itself if it is a report folder, and its direct sub-folders that are."""
    if not root.is_dir():
        return []
    found = [root] if is_report(root) else []
    return found + sorted(d for d in root.iterdir() if not d.name.startswith(".")
                          and is_report(d))


def load_report(folder: Path) -> ReportFolder:
    """Read a report folder; raises ``ValueError`` (or OSError) when its files are unreadable."""
    summary = json.loads((folder / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError(f"{folder / 'summary.json'} is not a JSON object")
    figures = sorted((folder / FIGURES).glob("*.png")) if (folder / FIGURES).is_dir() else []
    return ReportFolder(
        path=folder,
        summary=summary,
        features=pd.read_csv(folder / "features.csv"),
        agreement=pd.read_csv(folder / "agreement.csv"),
        associations=pd.read_csv(folder / "associations.csv", keep_default_na=False,
                                 na_values=[""]),
        figures=figures,
    )
