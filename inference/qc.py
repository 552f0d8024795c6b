"""A quality-control montage per case: the tumour slices, the prediction over the FLAIR.

Each panel is one slice as stored (array rows down, columns across; no reorientation), the
FLAIR windowed to the case's 1st-99th percentile of brain (non-zero) values, the predicted
tumour filled in red with a red outline, and the ground truth (when given) outlined in green.
Panels are the slices where either mask has tumour, at most ``max_panels`` of them spread evenly
over the case (the title says so); a case without any shows its middle slice. Titles give
1-based slice numbers and the predicted area in mm² (pixels when the spacing is unknown).
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

PREDICTION_COLOUR = "#ff2a2a"
TRUTH_COLOUR = "#3cff3c"
_FILL = ListedColormap([(0, 0, 0, 0), (1.0, 0.16, 0.16, 0.35)])


def qc_slices(masks: np.ndarray, truths: np.ndarray | None, max_panels: int) -> list[int]:
    """0-based indices along axis 2 to show (see the module docs)."""
    tumour = masks.reshape(-1, masks.shape[2]).any(axis=0)
    if truths is not None:
        tumour |= truths.reshape(-1, truths.shape[2]).any(axis=0)
    found = np.flatnonzero(tumour)
    if found.size == 0:
        return [masks.shape[2] // 2]
    if found.size <= max_panels:
        return [int(k) for k in found]
    picks = np.unique(np.linspace(0, found.size - 1, max_panels).round().astype(int))
    return [int(found[i]) for i in picks]


def _window(flair: np.ndarray) -> tuple[float, float]:
    brain = flair[flair != 0]
    if brain.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(brain, [1, 99])
    return float(low), float(max(high, low + 1e-6))


def qc_montage(
    flair: np.ndarray,
    masks: np.ndarray,
    truths: np.ndarray | None = None,
    *,
    title: str,
    pixel_mm2: float | None = None,
    max_panels: int = 24,
    columns: int = 6,
) -> bytes:
    """PNG bytes of the montage. ``flair``, ``masks`` and ``truths`` are ``H x W x Z``."""
    if flair.shape != masks.shape or (truths is not None and truths.shape != masks.shape):
        raise ValueError(f"shapes differ: FLAIR {flair.shape}, masks {masks.shape}, "
                         f"truth {None if truths is None else truths.shape}")
    shown = qc_slices(masks, truths, max_panels)
    tumour_slices = int(masks.reshape(-1, masks.shape[2]).any(axis=0).sum())
    cols = min(columns, len(shown))
    rows = math.ceil(len(shown) / cols)
    height, width = masks.shape[:2]
    panel = 2.4
    figure = Figure(figsize=(cols * panel, rows * panel * height / width + 0.9), dpi=90,
                    layout="constrained")  # fmt: skip
    FigureCanvasAgg(figure)
    low, high = _window(flair)
    for n, k in enumerate(shown):
        ax = figure.add_subplot(rows, cols, n + 1)
        ax.imshow(flair[:, :, k], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        mask = masks[:, :, k] != 0
        ax.imshow(mask.astype(np.uint8), cmap=_FILL, vmin=0, vmax=1, interpolation="nearest")
        if mask.any():
            ax.contour(mask, levels=[0.5], colors=PREDICTION_COLOUR, linewidths=0.8)
        if truths is not None and truths[:, :, k].any():
            ax.contour(truths[:, :, k] != 0, levels=[0.5], colors=TRUTH_COLOUR, linewidths=1.0)
        area = int(mask.sum())
        size = f"{area * pixel_mm2:.0f} mm²" if pixel_mm2 is not None else f"{area} px"
        ax.set_title(f"slice {k + 1}: {size}", fontsize=8)
        ax.set_axis_off()
    if tumour_slices == 0:
        scope = "no tumour predicted (middle slice shown)"
    elif len(shown) < tumour_slices:
        scope = f"{len(shown)} of {tumour_slices} slices with tumour"
    else:
        scope = f"{tumour_slices} slice(s) with tumour"
    legend = "red: prediction" + ("; green outline: ground truth" if truths is not None else "")
    figure.suptitle(f"{title}: {scope}\n{legend}; research use only, not for diagnosis",
                    fontsize=9)  # fmt: skip
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
