"""Serving blobs: big reads, Range and conditional requests, errors in the contract's shape."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from app.api.errors import ErrorResponse, error_body
from app.storage.composed import BlobPaths, FileSegment, Recipe, Segment, segments
from app.storage.mapped import MappedReader

# Starlette reads 64 KiB per thread hop by default. Sends here are views of memory maps (no copy, no
# memory of their own), so a large unit costs nothing and saves thread hops: 16 MiB halves the server CPU.
DOWNLOAD_CHUNK_BYTES = 16 * 1024 * 1024


class BlobResponse(FileResponse):
    """A stored file, sent from a memory map (``app.storage.mapped``): one copy, kernel to socket."""

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

    def _segments_between(self, start: int, end: int) -> Iterator[Segment]:
        yield FileSegment(Path(self.path), start, end - start)

    def _size(self) -> int:
        return self.stat_result.st_size if self.stat_result is not None else os.stat(self.path).st_size

    async def _handle_simple(self, send: Send, send_header_only: bool, send_pathsend: bool) -> None:
        if send_header_only or send_pathsend:
            return await super()._handle_simple(send, send_header_only, send_pathsend)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await self._send_body(send, 0, self._size())

    async def _handle_single_range(
        self, send: Send, start: int, end: int, file_size: int, send_header_only: bool
    ) -> None:
        if send_header_only:
            return await super()._handle_single_range(send, start, end, file_size, send_header_only)
        headers = MutableHeaders(raw=list(self.raw_headers))
        headers["content-range"] = f"bytes {start}-{end - 1}/{file_size}"
        headers["content-length"] = str(end - start)
        await send({"type": "http.response.start", "status": 206, "headers": headers.raw})
        await self._send_body(send, start, end)

    async def _send_body(self, send: Send, start: int, end: int) -> None:
        """Each piece as its own body message: a view of the mapped blob, or a literal as it is."""
        reader = MappedReader(self._segments_between, self._size())
        try:
            async for chunk in reader.chunks(start, end, self.chunk_size):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            reader.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[Any]:
        reader = MappedReader(self._segments_between, self._size())
        try:
            yield reader
        finally:
            reader.close()


class ComposedResponse(BlobResponse):
    """A recipe's composed bytes served as if they were one file: the same Range (single, multiple,
    suffix), HEAD, Content-Length and status handling as a whole-file blob, sent piece by piece
    from memory maps of the tensor blobs (memory stays flat; nothing is cached).

    ``stat_result`` is the recipe blob's, with the composed size: Last-Modified changes with it as a
    file blob's does, and Content-Length is the recipe's size.
    """

    _PATHSEND = "http.response.pathsend"

    def __init__(
        self,
        recipe: Recipe,
        blobs: BlobPaths,
        *,
        recipe_stat: os.stat_result,
        headers: Mapping[str, str],
        media_type: str,
    ) -> None:
        self.recipe, self.blobs = recipe, blobs
        fields = list(recipe_stat)
        fields[6] = recipe.size  # st_size
        super().__init__(
            f"recipe-{recipe.sha256}",
            headers=headers,
            media_type=media_type,
            stat_result=os.stat_result(fields),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # There is no one file to hand the server: never take its pathsend extension (uvicorn has none).
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != self._PATHSEND}
        await super().__call__({**scope, "extensions": extensions}, receive, send)

    def _segments_between(self, start: int, end: int) -> Iterator[Segment]:
        return segments(self.recipe, self.blobs, start, end)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates
