"""Property-based requests generated from the app's own OpenAPI schema: never a 5xx.

Bounded: 20 examples per operation, on a tiny random-weights checkpoint. The schema is loaded
when this module is collected (``schemathesis.pytest.from_fixture`` does not work with
pytest 9), from a checkpoint written to a temporary folder that is removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from inference.api import create_app
from tests.inference.api_helpers import settings as serve_settings
from tests.inference.samples import make_checkpoint

_folder = Path(tempfile.mkdtemp(prefix="lggseg-schemathesis-"))
atexit.register(shutil.rmtree, _folder, ignore_errors=True)
_app = create_app(serve_settings(make_checkpoint(_folder / "tiny.safetensors")))
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)
schema.config.generation.update(max_examples=20)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code}"
    case.validate_response(response, checks=[not_a_server_error])
