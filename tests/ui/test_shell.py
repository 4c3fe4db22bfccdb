"""The UI's server side, without a browser: the shell and assets are public and locked down, and
GET /v1/auth/whoami tells a client its scope."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.auth.service import create_token
from app.main import create_app
from app.settings import Settings


@pytest.fixture
def secured(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"auth": "on"}))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def token(client: TestClient, scope: str) -> str:
    with client.app.state.runtime.sessions() as session:  # type: ignore[attr-defined]
        return create_token(session=session, scope=scope)[1]


def test_shell_and_assets_need_no_token_and_forbid_inline_script(secured: TestClient) -> None:
    root = secured.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    for path in ("/ui/", "/ui/models/demo", "/ui/models/demo/versions/3?tab=x", "/ui/architectures"):
        page = secured.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
    html = secured.get("/ui/").text
    assert "<script>" not in html and " style=" not in html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    local = [a for a in assets if a.startswith("/ui/static/")]
    assert len(local) == 2
    assert [a for a in assets if a.startswith(("http:", "https:", "//"))] == []
    for asset in local:
        assert secured.get(asset).status_code == 200, asset
    modules = ["api", "dom", "main", "models", "upload", "version"]
    for name in modules:
        script = secured.get(f"/ui/static/js/{name}.js")
        assert script.status_code == 200
        assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
        assert "http://" not in script.text and "https://" not in script.text
    assert secured.get("/ui/static/missing.js").status_code == 404


def test_ui_routes_are_not_api_operations(secured: TestClient) -> None:
    paths = secured.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]


def test_whoami_answers_the_tokens_scope(secured: TestClient, client: TestClient) -> None:
    assert client.get("/v1/auth/whoami").json() == {"scope": "admin", "auth": "off"}
    missing = secured.get("/v1/auth/whoami")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    bad = secured.get("/v1/auth/whoami", headers={"Authorization": "Bearer wv_nope_nope"})
    assert bad.status_code == 401
    for scope in ("read", "write", "admin"):
        answer = secured.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {token(secured, scope)}"})
        assert answer.status_code == 200
        assert answer.json() == {"scope": scope, "auth": "on"}
