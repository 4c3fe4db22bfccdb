"""Serving blobs: big reads, Range and conditional requests, errors in the contract's shape."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from app.api.errors import ErrorResponse, error_body

# Starlette reads 64 KiB per thread hop by default; 4 MiB moves a GiB several times faster.
DOWNLOAD_CHUNK_BYTES = 4 * 1024 * 1024


class BlobResponse(FileResponse):
    chunk_size = DOWNLOAD_CHUNK_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        http_range = Headers(scope=scope).get("range")
        if http_range is not None and self.stat_result is not None:
            size = self.stat_result.st_size
            try:
                self._parse_range_header(http_range, size)
            except MalformedRangeHeader as exc:
                response = ErrorResponse(
                    error_body("invalid_range", f"The Range header is malformed: {exc.content}."),
                    status_code=400,
                )
                return await response(scope, receive, send)
            except RangeNotSatisfiable:
                response = ErrorResponse(
                    error_body(
                        "range_not_satisfiable", f"The requested range starts past the end ({size} bytes)."
                    ),
                    status_code=416,
                    headers={"Content-Range": f"bytes */{size}"},
                )
                return await response(scope, receive, send)
        await super().__call__(scope, receive, send)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates
