"""Hold back every API answer FastAPI gives until the read lease has passed, so no kept read is older.

The other half of ``app.api.stamp_leases``: an API process may reuse a read stamp for ``lease`` seconds,
so anything the database told a client (a write's success, a job reported finished, an artifact found)
must reach the client no sooner than ``lease`` after the database told it. Each answer under ``/v1/``
that FastAPI gives (every write, every error, every read the fast path did not take) starts no sooner
than ``lease`` after its handler finished. The hot reads the fast path answers are not held (see
``app.api.stamp_leases`` for what that allows while a change is not yet answered). The request's database
session closes after its answer is sent (FastAPI's dependency exit), so it stays open through the wait:
a pooled connection is held for the lease longer per answer.

Nothing that starts a response and then reads or writes the database is mounted under ``/v1/``: a
download reads its rows before its first byte. Pages under ``/ui`` and ``/docs`` carry no data.
"""

from __future__ import annotations

import asyncio

from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/v1/"


class CommitWait:
    """ASGI middleware: sleep ``lease_seconds`` before the start of every ``/v1/`` answer it passes."""

    def __init__(self, app: ASGIApp, lease_seconds: float) -> None:
        self.app = app
        self.lease_seconds = lease_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.lease_seconds
            or scope["type"] != "http"
            or not get_route_path(scope).startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return

        async def send_after_lease(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(self.lease_seconds)
            await send(message)

        await self.app(scope, receive, send_after_lease)
