"""Dependency providers: settings, the model service, the API key check, in-memory forms."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from inference.api.service import ModelService
from inference.api.settings import ServeSettings, get_settings
from inference.api.uploads import read_form

SettingsDep = Annotated[ServeSettings, Depends(get_settings)]

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="required on /v1/* when the server sets LGGSEG_SERVE_API_KEY",
)


def get_service(request: Request) -> ModelService:
    """The model service created in the app's lifespan."""
    service: ModelService = request.app.state.service
    return service


ServiceDep = Annotated[ModelService, Depends(get_service)]


def require_api_key(
    settings: SettingsDep, api_key: Annotated[str | None, Security(_api_key_header)] = None
) -> None:
    """401 unless the server has no key configured or the request's X-API-Key matches it."""
    expected = settings.api_key
    if expected is None:
        return
    if api_key is None or not secrets.compare_digest(
        api_key.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(
            401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "APIKey"}
        )


def ready_service(service: ServiceDep) -> ModelService:
    """The service, or 503 with the reason when no model is loaded (checked before the body)."""
    service.require_predictor()
    return service


ReadyServiceDep = Annotated[ModelService, Depends(ready_service)]


class FormFiles:
    """Read the named multipart fields into memory (see ``inference.api.uploads``)."""

    def __init__(self, *names: str) -> None:
        self.names = names

    async def __call__(self, request: Request, settings: SettingsDep) -> dict[str, bytes]:
        return await read_form(
            request,
            self.names,
            max_parts=settings.max_form_parts,
            max_header_bytes=settings.max_part_header_bytes,
        )


SliceForm = Annotated[dict[str, bytes], Depends(FormFiles("file"))]
EvaluateForm = Annotated[dict[str, bytes], Depends(FormFiles("file", "mask"))]


def multipart_body(*fields: str, descriptions: dict[str, str] | None = None) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a multipart form of binary file fields (parsed by hand)."""
    descriptions = descriptions or {}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": list(fields),
                        "properties": {
                            name: {
                                "type": "string",
                                "format": "binary",
                                "description": descriptions.get(name, ""),
                            }
                            for name in fields
                        },
                    }
                }
            },
        }
    }
