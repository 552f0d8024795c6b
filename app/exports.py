"""Files the viewer offers for download, built in memory (nothing is written to disk).

Masks go through ``inference.outputs`` directly, the API's own encoders, so a mask downloaded
from the viewer and one returned by the API are byte-identical; this module adds the metrics
table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd


def metrics_csv(rows: Sequence[dict[str, Any]]) -> bytes:
    """Rows of metrics (one dict per slice, same keys) as UTF-8 CSV with a header line."""
    if not rows:
        raise ValueError("no metrics to export")
    return pd.DataFrame(list(rows)).to_csv(index=False).encode("utf-8")
