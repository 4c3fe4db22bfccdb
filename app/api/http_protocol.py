"""uvicorn's httptools protocol with two guards of ours: a deadline for request headers, and the
contract's JSON error body for requests that never reach the app.

uvicorn waits forever for a request's headers (a client trickling them holds its connection: slowloris)
and answers a request it cannot parse with a bare ``text/plain`` 400. ``weightvault serve`` passes this
class to uvicorn as its ``http`` protocol, so every API process it starts uses it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.api.errors import ErrorResponse, error_body
from app.settings import get_settings

log = logging.getLogger("weightvault.http")


class WeightvaultHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes connections whose headers are late and answers parser errors
    with ``{"error": {"code", "message", "details"}}``."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = get_settings().header_timeout_seconds
        self._header_deadline: asyncio.TimerHandle | None = None
        self._request_begun = False  # a request's first bytes arrived, its headers are not complete

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        # uvicorn arms no timer before the first request: a silent connection would stay forever.
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        # The first request's deadline runs from the connection, later ones' from their first byte
        # (between requests uvicorn's keep-alive timeout applies).
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        self._request_begun = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        reason = _parser_reason(fallback=msg)
        self._disarm_header_deadline()
        self._send_error(
            400,
            "bad_request",
            f"The request is not valid HTTP/1.1 ({reason.rstrip('.')}); it did not reach the API.",
        )

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_late(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request trickles in behind one still being answered: finish that answer,
            # then close instead of waiting for the rest.
            self.cycle.keep_alive = False
            return
        if not self._request_begun:
            self.transport.close()  # connected but sent nothing: there is no request to answer
            return
        log.warning("request headers incomplete after %g s; closing the connection", self.header_timeout)
        self._send_error(
            408,
            "request_timeout",
            f"The request headers did not arrive within {self.header_timeout:g} s "
            "(WEIGHTVAULT_HEADER_TIMEOUT_SECONDS); the connection is closed.",
        )

    def _send_error(self, status: int, code: str, message: str) -> None:
        """Write a complete contract error response and close the connection."""
        response = ErrorResponse(error_body(code, message), status_code=status)
        head = [STATUS_LINE[status]]
        for name, value in [
            *self.server_state.default_headers,
            *response.raw_headers,
            (b"connection", b"close"),
        ]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", response.body]))
        self.transport.close()


def _parser_reason(*, fallback: str) -> str:
    """What the parser found wrong ("Invalid header value char", "url is too long ..."), so the client
    knows what to fix; uvicorn calls ``send_400_response`` from its ``except HttpParserError`` block."""
    error = sys.exc_info()[1]
    # An error raised in uvicorn's own parser callbacks (parse_url's) arrives wrapped in a callback error.
    if isinstance(error, httptools.HttpParserCallbackError) and isinstance(
        error.__context__, httptools.HttpParserError
    ):
        error = error.__context__
    if not isinstance(error, httptools.HttpParserError) or isinstance(
        error, httptools.HttpParserCallbackError
    ):
        return fallback  # not the parser's finding (or a fault of ours): say no more than uvicorn does
    return str(error) or fallback
