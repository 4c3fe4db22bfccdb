"""Which scope each request needs (API.md, Conventions: Auth), enforced as one app-wide dependency."""

from __future__ import annotations

import re

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.auth.service import Scope, require_scope, verify
from app.runtime import Runtime

PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
_ADMIN_DELETES = (re.compile(r"^/v1/models/[^/]+$"), re.compile(r"^/v1/models/[^/]+/versions/[^/]+$"))


def needed_scope(method: str, path: str) -> Scope:
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    if method == "DELETE" and any(pattern.match(path) for pattern in _ADMIN_DELETES):
        return "admin"
    return "write"


async def authorize(request: Request) -> None:
    runtime: Runtime = request.app.state.runtime
    if not runtime.settings.auth_enabled or request.url.path in PUBLIC_PATHS:
        return
    header = request.headers.get("authorization")

    def check() -> None:
        with runtime.sessions() as session:
            token = verify(session=session, authorization=header)
            require_scope(token, needed_scope(request.method, request.url.path))

    await run_in_threadpool(check)
