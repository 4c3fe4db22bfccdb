"""The OpenAPI document as the service really answers: every 4xx carries the contract's error body.

FastAPI documents 422 as its own ``HTTPValidationError``; the service answers ``{"error": {...}}`` for
that and for every other refusal, so the document says so once for each operation.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

_REF = "#/components/schemas/ErrorBody"


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case, stable: what went wrong (e.g. model_not_found)")
    message: str = Field(description="One sentence a person can act on")
    details: dict[str, Any] = Field(default_factory=dict, description="Structured context, where it helps")


class ErrorBody(BaseModel):
    error: ErrorDetail


def install_contract_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            schemas["ErrorDetail"] = ErrorDetail.model_json_schema()
            schemas["ErrorBody"] = {
                "title": "ErrorBody",
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
            }
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    _errors_are_contract_bodies(operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _errors_are_contract_bodies(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    body = {"application/json": {"schema": {"$ref": _REF}}}
    for status, response in responses.items():
        if status.startswith("4"):
            response["content"] = body
    responses.setdefault(
        "4XX",
        {"description": "Refused: the contract's error body (code, message, details)", "content": body},
    )
