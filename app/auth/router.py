"""GET /v1/auth/whoami: the scope of the caller's token, so a client can hide what it may not do."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.auth.policy import requires
from app.auth.service import Scope, verify
from app.deps import RuntimeDep, SessionDep

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class WhoAmI(BaseModel):
    scope: Scope = Field(description="What the caller may do; 'admin' when the server runs with auth off")
    auth: Literal["on", "off"] = Field(description="Whether the server requires tokens")


@router.get("/whoami", dependencies=[requires("read")])
def whoami(request: Request, runtime: RuntimeDep, session: SessionDep) -> WhoAmI:
    """The token's scope (401 without a valid token when auth is on)."""
    if not runtime.settings.auth_enabled:
        return WhoAmI(scope="admin", auth="off")
    # requires('read') has checked the token; reading it again gives its scope.
    token = verify(session=session, authorization=request.headers.get("authorization"))
    scope: Scope = token.scope  # type: ignore[assignment]
    return WhoAmI(scope=scope, auth="on")
