"""Bearer tokens and scopes: read < write < admin, as API.md assigns them to calls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.auth.service import create_token, list_tokens, revoke_token
from app.main import create_app
from app.settings import Settings
from tests.checkpoints import SimpleModel, save


@pytest.fixture
def secured(settings: Settings) -> Iterator[TestClient]:
    with TestClient(
        create_app(settings.model_copy(update={"auth": "on"})), raise_server_exceptions=False
    ) as client:
        yield client


def _token(client: TestClient, scope: str) -> str:
    with client.app.state.runtime.sessions() as session:  # type: ignore[attr-defined]
        return create_token(session=session, scope=scope)[1]


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_scopes_follow_the_contract(secured: TestClient, tmp_path: Path) -> None:
    read, write, admin = (_token(secured, s) for s in ("read", "write", "admin"))
    weights = save(SimpleModel().state_dict(), tmp_path / "w.pt").read_bytes()

    assert secured.get("/v1/models").status_code == 401
    assert secured.get("/v1/models", headers=_as(read)).status_code == 200
    assert (
        secured.post(
            "/v1/models", json={"name": "demo", "architecture": "simple-linear"}, headers=_as(read)
        ).status_code
        == 403
    )
    assert (
        secured.post(
            "/v1/models", json={"name": "demo", "architecture": "simple-linear"}, headers=_as(write)
        ).status_code
        == 201
    )
    assert secured.post("/v1/models/demo/versions", content=weights, headers=_as(read)).status_code == 403
    assert secured.post("/v1/models/demo/versions", content=weights, headers=_as(write)).status_code == 201
    assert secured.get("/v1/models/demo/versions/1/artifacts/weights", headers=_as(read)).status_code == 200
    assert secured.head("/v1/models/demo/versions/1/artifacts/weights", headers=_as(read)).status_code == 200
    assert (
        secured.put("/v1/models/demo/aliases/prod", json={"version": 1}, headers=_as(read)).status_code == 403
    )
    assert (
        secured.put("/v1/models/demo/aliases/prod", json={"version": 1}, headers=_as(write)).status_code
        == 200
    )
    assert secured.delete("/v1/models/demo/aliases/prod", headers=_as(write)).status_code == 204
    assert secured.post("/v1/models/demo/versions/1/onnx", headers=_as(read)).status_code == 403
    assert secured.post("/v1/models/demo/versions/1/onnx", headers=_as(write)).status_code == 202
    assert secured.delete("/v1/models/demo/versions/1", headers=_as(write)).status_code == 403
    assert secured.delete("/v1/models/demo/versions/1", headers=_as(admin)).status_code == 204
    assert secured.delete("/v1/models/demo", headers=_as(write)).status_code == 403
    assert secured.delete("/v1/models/demo", headers=_as(admin)).status_code == 204


def test_errors_follow_the_shape_and_say_what_to_do(secured: TestClient) -> None:
    missing = secured.get("/v1/models")
    assert missing.status_code == 401
    assert (
        missing.json()["error"]["code"] == "unauthorized" and "Bearer" in missing.json()["error"]["message"]
    )
    for header in ("Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer wv_abc_def", "Bearer wv_" + "x" * 300):
        bad = secured.get("/v1/models", headers={"Authorization": header})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
    forbidden = secured.delete("/v1/models/demo", headers=_as(_token(secured, "write")))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["details"] == {"needed": "admin", "scope": "write"}


def test_operations_endpoints_need_no_token(secured: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert secured.get(path).status_code == 200, path


def test_tokens_are_stored_hashed_listed_without_secret_and_revocable(secured: TestClient) -> None:
    token = _token(secured, "read")
    runtime = secured.app.state.runtime  # type: ignore[attr-defined]
    public_id, secret = token.split("_")[1], token.split("_", 2)[2]
    with runtime.sessions() as session:
        rows = list_tokens(session=session)
        assert [row.public_id for row in rows] == [public_id]
        assert secret not in repr(vars(rows[0])) and rows[0].secret_sha256 != secret
    assert secured.get("/v1/models", headers=_as(token)).status_code == 200
    with runtime.sessions() as session:
        assert revoke_token(session=session, public_id=public_id)
    revoked = secured.get("/v1/models", headers=_as(token))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]


def test_auth_off_allows_everything(client: TestClient) -> None:
    assert (
        client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"}).status_code == 201
    )
    assert client.delete("/v1/models/demo").status_code == 204


def test_every_route_declares_its_scope_next_to_it(client: TestClient) -> None:
    """Walks the app: an API route without ``dependencies=[requires(...)]`` would need admin; this names it
    first. The scopes are the contract's (docs/api.md, Conventions: Auth)."""
    from fastapi.routing import APIRoute, iter_route_contexts

    from app.auth.policy import declared_requirement

    # /v1/uploads (OPTIONS): tus discovery, which clients send before they authenticate
    public = {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/v1/uploads"}
    admin_deletes = {"/v1/models/{model}", "/v1/models/{model}/versions/{ref}", "/v1/architectures/{arch}"}
    undeclared, wrong, checked = [], [], 0
    for context in iter_route_contexts(client.app.routes):
        route, path = context.original_route, str(context.path)
        if not isinstance(route, APIRoute):
            # Plain routes and mounts (/openapi.json, docs assets, the UI shell) skip the API's
            # dependencies altogether: none of them may serve the API's data.
            assert not path.startswith("/v1"), f"{path} is served outside the API's authorization"
            continue
        requirement = declared_requirement(route)
        if requirement is None:
            undeclared.append(f"{sorted(route.methods)} {path}")
            continue
        for method in route.methods:
            if path in public:
                expected = None
            elif method in ("GET", "HEAD", "OPTIONS"):
                expected = "read"
            elif method == "DELETE" and path in admin_deletes:
                expected = "admin"
            else:
                expected = "write"
            if requirement.scope != expected:
                wrong.append(f"{method} {path}: {requirement.scope}, expected {expected}")
            checked += 1
    assert undeclared == [], "routes that declare no scope (add dependencies=[requires(...)])"
    assert wrong == []
    assert checked > 20


def test_a_route_that_declares_nothing_needs_admin(secured: TestClient) -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.post("/v1/forgotten")
    def forgotten() -> dict[str, bool]:
        return {"ran": True}

    secured.app.include_router(router)  # type: ignore[attr-defined]
    write, admin = _token(secured, "write"), _token(secured, "admin")
    refused = secured.post("/v1/forgotten", headers=_as(write))
    assert refused.status_code == 403 and refused.json()["error"]["details"]["needed"] == "admin"
    assert secured.post("/v1/forgotten", headers=_as(admin)).json() == {"ran": True}


def test_unknown_routes_answer_404_and_wrong_methods_405_before_any_token(secured: TestClient) -> None:
    for method, path, status in (
        ("GET", "/v1/nothing-here", 404),
        ("DELETE", "/v1/models/demo/versions/1/artifacts/full/extra", 404),
        ("PUT", "/v1/jobs", 405),
    ):
        response = secured.request(method, path)
        assert response.status_code == status, (method, path, response.text)
