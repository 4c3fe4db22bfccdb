"""Request ids, the access log line and request metrics: one ASGI middleware for every request, and the
two functions it uses (``incoming_request_id``, ``finish_request``) for the fast reads answered before it."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ops.logs import request_id_var
from app.ops.metrics import BYTES_IN, BYTES_OUT, LATENCY, REQUESTS

log = logging.getLogger("weightvault.access")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# Request ids: 32 hex characters, a random prefix per process and a counter. Unique, which is all an id
# needs, without a uuid4's getrandom() system call on every request (a few percent of a fast read).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


# The labelled children of the request metrics, looked up once per (method, route, status):
# ``labels()`` checks and joins its arguments on every call.
_children: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}


def _metrics(method: str, route: str, status: int) -> tuple[Any, Any, Any, Any]:
    key = (method, route, str(status))
    found = _children.get(key)
    if found is None:
        found = _children[key] = (
            REQUESTS.labels(*key),
            LATENCY.labels(method, route),
            BYTES_IN.labels(route),
            BYTES_OUT.labels(route),
        )
    return found


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-ID`` when it is a plausible id, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            return incoming if _CLIENT_ID.fullmatch(incoming) else new_request_id()
    return new_request_id()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"])
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, tagging_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            finish_request(scope, route=route, status=status, started=started, received=received, sent=sent)
            request_id_var.reset(token)


def finish_request(
    scope: Scope, *, route: str, status: int, started: float, received: int, sent: int
) -> None:
    """Count the request in the metrics and write its access log line (with the current request id)."""
    elapsed = time.perf_counter() - started
    method = scope["method"]
    requests, latency, bytes_in, bytes_out = _metrics(method, route, status)
    requests.inc()
    latency.observe(elapsed)
    bytes_in.inc(received)
    bytes_out.inc(sent)
    if log.isEnabledFor(logging.INFO):
        # makeRecord + handle is what log.info does, less findCaller's walk up the stack (a tenth of a
        # fast read): the caller is always this line, and no formatter of ours prints it.
        record = log.makeRecord(
            log.name,
            logging.INFO,
            __file__,
            0,
            "%s %s %d %.1fms",
            (method, scope["path"], status, elapsed * 1000),
            None,
            extra={
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "bytes_in": received,
                "bytes_out": sent,
            },
        )
        log.handle(record)
