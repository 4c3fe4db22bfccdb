"""Models, aliases, refs, deletes and pagination through the HTTP contract."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.artifacts import stored
from app.artifacts.models import Artifact
from app.models.models import RegisteredModel
from app.versions.models import Version
from tests.checkpoints import SimpleModel, save
from tests.conftest import create_model, stored_files, upload


def _push(client: TestClient, tmp_path: Path, model: str = "demo") -> int:
    response = upload(client, model, save(SimpleModel().state_dict(), tmp_path / "w.pt"))
    assert response.status_code == 201, response.text
    return int(response.json()["version"])


def test_create_model_fills_in_the_default_config(client: TestClient) -> None:
    created = create_model(client, "mnist", "mlp", config={"hidden_sizes": [32]}, description="digits")
    assert created["config"] == {
        "in_features": 784,
        "hidden_sizes": [32],
        "out_features": 10,
        "activation": "relu",
        "dropout": 0.0,
    }
    assert created["latest_version"] is None and created["aliases"] == {}
    assert created["created_at"].endswith("Z") or "+00:00" in created["created_at"]
    assert client.get("/v1/models/mnist").json() == created


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "Bad Name", "architecture": "mlp"}, 422, "invalid_name"),
        ({"name": "x" * 129, "architecture": "mlp"}, 422, "invalid_name"),
        ({"name": "ok", "architecture": "resnet-9000"}, 422, "architecture_not_found"),
        ({"name": "ok", "architecture": "mlp", "config": {"hidden_sizes": "many"}}, 422, "invalid_config"),
        ({"name": "ok", "architecture": "mlp", "config": {"no_such_option": 1}}, 422, "invalid_config"),
        ({"name": "ok"}, 422, "invalid_request"),
    ],
)
def test_create_model_refusals(client: TestClient, body: dict[str, object], status: int, code: str) -> None:
    response = client.post("/v1/models", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_duplicate_model_is_a_conflict(client: TestClient) -> None:
    create_model(client)
    response = client.post("/v1/models", json={"name": "demo", "architecture": "mlp"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "model_exists"


def test_aliases_refs_and_latest(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    assert [_push(client, tmp_path) for _ in range(3)] == [1, 2, 3]
    model = client.put("/v1/models/demo/aliases/production", json={"version": 2}).json()
    assert model["aliases"] == {"production": 2} and model["latest_version"] == 3
    assert client.get("/v1/models/demo/versions/production").json()["version"] == 2
    assert client.get("/v1/models/demo/versions/latest").json()["version"] == 3
    # an alias can point at another ref, and moves
    assert client.put("/v1/models/demo/aliases/staging", json={"version": "latest"}).json()["aliases"] == {
        "production": 2,
        "staging": 3,
    }
    assert (
        client.put("/v1/models/demo/aliases/production", json={"version": 3}).json()["aliases"]["production"]
        == 3
    )
    assert client.delete("/v1/models/demo/aliases/staging").status_code == 204
    assert client.get("/v1/models/demo").json()["aliases"] == {"production": 3}
    assert client.get("/v1/models/demo/versions/staging").status_code == 404


@pytest.mark.parametrize("alias", ["latest", "42", "Bad!"])
def test_reserved_and_invalid_alias_names(client: TestClient, tmp_path: Path, alias: str) -> None:
    create_model(client)
    _push(client, tmp_path)
    response = client.put(f"/v1/models/demo/aliases/{alias}", json={"version": 1})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_name"


def test_alias_to_missing_version(client: TestClient) -> None:
    create_model(client)
    response = client.put("/v1/models/demo/aliases/production", json={"version": 7})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "version_not_found"


def test_unknown_model_is_reported_before_unknown_version(client: TestClient) -> None:
    for path in (
        "/v1/models/ghost",
        "/v1/models/ghost/versions",
        "/v1/models/ghost/versions/1",
        "/v1/models/ghost/versions/1/artifacts",
        "/v1/models/ghost/versions/1/artifacts/weights",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "model_not_found", path
    assert client.post("/v1/models/ghost/versions", content=b"x").json()["error"]["code"] == "model_not_found"
    create_model(client)
    response = client.get("/v1/models/demo/versions/9")
    assert response.status_code == 404 and response.json()["error"]["code"] == "version_not_found"


def test_version_numbers_are_never_reused_after_delete(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    _push(client, tmp_path)
    _push(client, tmp_path)
    client.put("/v1/models/demo/aliases/production", json={"version": 2})
    assert client.delete("/v1/models/demo/versions/2").status_code == 409  # alias_in_use
    assert client.delete("/v1/models/demo/versions/2", params={"force": "true"}).status_code == 204
    assert client.get("/v1/models/demo/versions/2").status_code == 404
    model = client.get("/v1/models/demo").json()
    assert model["latest_version"] == 1 and model["aliases"] == {}
    assert _push(client, tmp_path) == 3


def test_deleting_a_version_keeps_files_other_versions_share(
    client: TestClient, tmp_path: Path, data_dir: Path
) -> None:
    create_model(client)
    _push(client, tmp_path)
    _push(client, tmp_path)  # identical bytes: same blobs
    blobs = {p for p in stored_files(data_dir) if p.startswith("blobs/")}
    client.delete("/v1/models/demo/versions/1")
    assert {p for p in stored_files(data_dir) if p.startswith("blobs/")} == blobs
    response = client.get("/v1/models/demo/versions/2/artifacts/weights")
    assert response.status_code == 200


def test_delete_model(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    _push(client, tmp_path)
    assert client.delete("/v1/models/demo").status_code == 204
    assert client.get("/v1/models/demo").status_code == 404
    create_model(client)  # the name is free again
    assert _push(client, tmp_path) == 1


def _blobs(data_dir: Path) -> set[str]:
    return {p for p in stored_files(data_dir) if p.startswith("blobs/")}


def _age_blobs(data_dir: Path) -> None:
    # Releases spare blobs touched in the last minutes (an upload may be about to reference them).
    for path in (data_dir / "blobs").rglob("*"):
        if path.is_file():
            os.utime(path, (time.time() - 3600, time.time() - 3600))


def test_deleting_a_model_releases_its_files_in_the_service(
    client: TestClient, tmp_path: Path, data_dir: Path
) -> None:
    from app.models import service as models_service

    shared = save(SimpleModel().state_dict(), tmp_path / "shared.pt")
    for name in ("demo", "other"):
        create_model(client, name)
        assert upload(client, name, shared).status_code == 201
    only_demo = upload(client, "demo", save(SimpleModel().state_dict(), tmp_path / "own.pt")).json()
    before = _blobs(data_dir)
    _age_blobs(data_dir)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.sessions() as session:  # the blobs only that version uses: its recipes and its tensors
        artifacts = session.scalars(
            select(Artifact)
            .join(Version)
            .join(RegisteredModel)
            .where(RegisteredModel.name == "demo", Version.number == only_demo["version"])
        ).all()
        own = stored.blob_names(session=session, artifacts=artifacts)
    with runtime.sessions() as session:  # the service alone, no router: it releases what it deleted
        model = models_service.get_model(session=session, name="demo")
        models_service.delete_model(session=session, store=runtime.store, model=model)
    released = before - _blobs(data_dir)
    assert released and released == {p for p in before if p.rsplit("/", 1)[1] in own}
    assert client.get("/v1/models/other/versions/1/artifacts/weights").status_code == 200
    assert client.get("/v1/models/demo").status_code == 404


def test_pagination_walks_every_model_once(client: TestClient) -> None:
    names = [f"m{i:02d}" for i in range(7)]
    for name in names:
        create_model(client, name)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/models", params=params).json()
        assert len(page["items"]) <= 3
        seen += [m["name"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names


def test_pagination_limits(client: TestClient) -> None:
    create_model(client)
    assert len(client.get("/v1/models", params={"limit": 100000}).json()["items"]) == 1
    assert client.get("/v1/models", params={"limit": 0}).json()["error"]["code"] == "invalid_request"
    bad = client.get("/v1/models", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"


def test_architectures_are_listed_with_schemas_and_inputs(client: TestClient) -> None:
    listed = {a["name"]: a for a in client.get("/v1/architectures").json()["items"]}
    assert {"simple-linear", "mlp", "cnn", "transformer-encoder", "two-heads"} <= set(listed)
    simple = client.get("/v1/architectures/simple-linear").json()
    assert simple["inputs"] == [{"name": "x", "shape": ["batch", 10], "dtype": "float32"}]
    assert listed["mlp"]["config_schema"]["properties"]["hidden_sizes"]["type"] == "array"
    assert listed["transformer-encoder"]["inputs"][0]["dtype"] == "int64"
    missing = client.get("/v1/architectures/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "architecture_not_found"


def test_metadata_is_kept_and_validated(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    path = save(SimpleModel().state_dict(), tmp_path / "w.pt")
    via_query = upload(client, "demo", path, metadata='{"acc": 0.98, "tags": ["baseline"]}')
    assert via_query.json()["metadata"] == {"acc": 0.98, "tags": ["baseline"]}
    with path.open("rb") as handle:
        via_form = client.post(
            "/v1/models/demo/versions",
            files={"file": ("w.pt", handle)},
            data={"metadata": '{"notes": "form"}'},
        )
    assert via_form.status_code == 201 and via_form.json()["metadata"] == {"notes": "form"}
    for bad in ("[1, 2]", "not json", '"string"'):
        response = upload(client, "demo", path, metadata=bad)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_metadata"


def test_error_shape_for_unknown_routes_and_bad_bodies(client: TestClient) -> None:
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    malformed = client.post("/v1/models", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 422 and malformed.json()["error"]["code"] == "invalid_request"
    wrong_method = client.patch("/v1/models")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_operations_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "storage": True}
    assert client.get("/metrics").status_code == 200
    assert client.get("/docs").status_code == 200
    assert "/v1/models/{model}/versions" in client.get("/openapi.json").json()["paths"]


def test_alias_name_is_checked_before_the_version(client: TestClient) -> None:
    create_model(client)
    response = client.put("/v1/models/demo/aliases/latest", json={"version": 99})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_name"
