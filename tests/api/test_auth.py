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
