"""What each entry point loads matches the extra it is installed with (pyproject.toml).

The API runs on the base install plus ``[serve]`` (docker/api.Dockerfile installs only
``.[serve]``); the Predictor and the CLI run on the base install alone. Each probe runs in a
fresh interpreter and lists ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

API_PROBE = """
import json, sys
from inference.api import create_app
app = create_app()
print(json.dumps({"modules": sorted(sys.modules), "paths": sorted(app.openapi()["paths"])}))
"""

CLI_PROBE = """
import json, sys
from inference.predict import build_parser
from inference.predictor import Predictor
build_parser().format_help()
print(json.dumps({"modules": sorted(sys.modules), "paths": []}))
"""

# Packages of the other extras ([viewer], [train], [analysis]) and the project's own
# training/ and app/ folders (nothing imports those).
NOT_FOR_THE_API = ("streamlit", "albumentations", "statsmodels", "training", "app")
SERVE_ONLY = ("fastapi", "fastapi_offline", "starlette", "uvicorn", "prometheus_client",
              "pydantic_settings", "python_multipart")


def loaded(probe: str) -> tuple[set[str], list[str], list[str]]:
    """Top-level names, full module names and API paths after running ``probe`` afresh."""
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return {m.split(".")[0] for m in out["modules"]}, out["modules"], out["paths"]


def test_creating_the_api_app_loads_no_viewer_or_training_module() -> None:
    tops, modules, paths = loaded(API_PROBE)
    # The probe saw the real app: the API, its dependencies and its routes are there.
    assert {"inference", "fastapi", "prometheus_client"} <= tops
    assert "/v1/model" in paths
    assert sorted(tops & set(NOT_FOR_THE_API)) == []
    assert not [m for m in modules if m in ("data.augmentation", "data.dataset")]


def test_the_predictor_and_cli_need_no_extra() -> None:
    tops, _, _ = loaded(CLI_PROBE)
    assert {"inference", "models", "torch", "monai"} <= tops
    assert sorted(tops & set(NOT_FOR_THE_API + SERVE_ONLY)) == []
