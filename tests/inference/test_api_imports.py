"""The API runs on the base install plus ``[serve]``: importing it and creating the app loads no
viewer, training-only or training module (docker/api.Dockerfile installs only ``.[serve]``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from inference.api import create_app
app = create_app()
print(json.dumps({"modules": sorted(sys.modules), "paths": sorted(app.openapi()["paths"])}))
"""

# Packages of the other extras ([viewer], [train], [analysis]) and the project's own
# training/ and app/ folders (nothing imports those).
FORBIDDEN = ("streamlit", "albumentations", "statsmodels", "training", "app")


def test_creating_the_api_app_loads_no_viewer_or_training_module() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    tops = {name.split(".")[0] for name in loaded["modules"]}
    # The probe saw the real app: the API, its dependencies and its routes are there.
    assert {"inference", "fastapi", "prometheus_client"} <= tops
    assert "/v1/model" in loaded["paths"]
    assert sorted(tops & set(FORBIDDEN)) == []
    assert not [m for m in loaded["modules"] if m in ("data.augmentation", "data.dataset")]
