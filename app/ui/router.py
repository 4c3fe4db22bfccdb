"""/ (redirect), /ui/... (the HTML shell) and /ui/static/... (scripts, styles).

These are plain Starlette routes, not API operations: they carry no data, so they need no token (the
pages fetch everything from /v1 with the token the user pasted), and they stay out of the OpenAPI document.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

# No inline script or style anywhere: the shell loads ui.js and ui.css from this origin, and fetch()
# may talk to this origin only. Nothing is framed, no <base> or <form> can redirect elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class UIStatic(StaticFiles):
    """Static files with the same security headers as the shell."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update({k: v for k, v in SECURITY_HEADERS.items() if k != "Cache-Control"})
        return response


@cache
def _shell() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


async def shell(request: Request) -> Response:
    """Every /ui page is the same shell; ui.js renders the page the path names."""
    return HTMLResponse(_shell(), headers=SECURITY_HEADERS)


async def to_ui(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


router = APIRouter()
router.add_route("/", to_ui, methods=["GET", "HEAD"], include_in_schema=False)
router.add_route("/ui", to_ui, methods=["GET", "HEAD"], include_in_schema=False)
router.mount("/ui/static", UIStatic(directory=STATIC_DIR), name="ui-static")
router.add_route("/ui/{page:path}", shell, methods=["GET", "HEAD"], include_in_schema=False)
