"""One place that turns every exception into the contract's error body."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import WeightvaultError

log = logging.getLogger("weightvault.errors")


class ErrorResponse(JSONResponse):
    """Error bodies may echo what a client sent; ASCII escapes keep any such text encodable."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WeightvaultError)
    async def _domain(_request: Request, exc: WeightvaultError) -> JSONResponse:
        if exc.status >= 500:
            log.error("server fault: %s", exc.message, exc_info=exc)
        headers = {"Connection": "close"} if exc.close_connection else None
        return ErrorResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(part) for part in err.get("loc", ())], "message": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "message": "invalid request"}
        where = ".".join(first["loc"][1:] or first["loc"]) or "request"
        return ErrorResponse(
            error_body(
                "invalid_request", f"Invalid request: {where}: {first['message']}.", {"errors": errors}
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI answers 400 for a body it could not parse; the contract calls that 422 invalid_request.
            return ErrorResponse(
                error_body("invalid_request", f"The request body could not be parsed: {exc.detail}."),
                status_code=422,
            )
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.detail else "Request failed."
        if exc.status_code == 404:
            message = "No such endpoint; the API lives under /v1 (see /docs)."
        elif exc.status_code == 405:
            message = "This endpoint does not accept that method (see /docs)."
        return ErrorResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled server fault", exc_info=exc)
        return ErrorResponse(
            error_body("internal_error", "The server failed to handle the request; the fault is logged."),
            status_code=500,
        )
