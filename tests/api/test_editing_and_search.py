"""Editing models and versions (PATCH), searching models, unknown query parameters, alias-safe deletes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import JSON, column, create_engine, insert, table

from app.auth.service import create_token
from app.db import name_search
from app.db.base import UTCDateTime
from app.db.migrate import upgrade
from app.main import create_app
from app.models import service
from app.settings import Settings
from tests.checkpoints import SimpleModel, save
from tests.conftest import create_model, upload

REMOVED_ALIASES = "X-Weightvault-Removed-Aliases"


def _push(client: TestClient, tmp_path: Path, model: str = "demo") -> int:
    response = upload(client, model, save(SimpleModel().state_dict(), tmp_path / "w.pt"))
    assert response.status_code == 201, response.text
    return int(response.json()["version"])


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


def _raw_patch(client: TestClient, path: str, body: str) -> Any:
    """A PATCH with a hand-written JSON body (NaN, lone surrogates: things json= would not send)."""
    return client.patch(path, content=body.encode(), headers={"Content-Type": "application/json"})


@pytest.fixture
def small_metadata_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"max_metadata_bytes": 32}))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# --- PATCH /v1/models/{model} -------------------------------------------------------------------------


def test_models_have_metadata_that_patch_replaces(client: TestClient) -> None:
    created = create_model(client, description="first")
    assert created["metadata"] == {}
    assert create_model(client, "tagged", metadata={"team": "vision"})["metadata"] == {"team": "vision"}

    patched = client.patch("/v1/models/demo", json={"metadata": {"team": "nlp", "tags": ["a"]}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"] == {"team": "nlp", "tags": ["a"]}
    assert patched.json()["description"] == "first"  # left out: kept

    # metadata is replaced as a whole, never merged
    replaced = client.patch("/v1/models/demo", json={"metadata": {"owner": "ana"}}).json()
    assert replaced["metadata"] == {"owner": "ana"}
    described = client.patch("/v1/models/demo", json={"description": "second"}).json()
    assert described["description"] == "second" and described["metadata"] == {"owner": "ana"}
    cleared = client.patch("/v1/models/demo", json={"description": None, "metadata": {}}).json()
    assert cleared["description"] is None and cleared["metadata"] == {}
    assert client.patch("/v1/models/demo", json={}).json() == cleared

    assert client.get("/v1/models/demo").json() == cleared
    listed = {m["name"]: m for m in client.get("/v1/models").json()["items"]}
    assert listed["demo"] == cleared and listed["tagged"]["metadata"] == {"team": "vision"}


def test_metadata_round_trips_exactly(client: TestClient, tmp_path: Path) -> None:
    metadata = {"nul": "a\u0000b", "text": "ünïcødé ✓", "nested": {"values": [1, 2.5, None, True, -0.0]}}
    create_model(client, metadata=metadata)
    _push(client, tmp_path)
    assert client.patch("/v1/models/demo", json={"metadata": metadata}).json()["metadata"] == metadata
    assert (
        client.patch("/v1/models/demo/versions/1", json={"metadata": metadata}).json()["metadata"] == metadata
    )
    assert client.get("/v1/models/demo").json()["metadata"] == metadata
    assert client.get("/v1/models/demo/versions/1").json()["metadata"] == metadata


def test_patch_model_keeps_the_rest_of_the_model(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    _push(client, tmp_path)
    client.put("/v1/models/demo/aliases/production", json={"version": 1})
    before = client.get("/v1/models/demo").json()
    after = client.patch("/v1/models/demo", json={"metadata": {"k": 1}}).json()
    assert after == {**before, "metadata": {"k": 1}}


@pytest.mark.parametrize(
    "body",
    [
        '{"metadata": [1, 2]}',
        '{"metadata": "text"}',
        '{"metadata": 3}',
        '{"metadata": null}',
        '{"metadata": {"loss": NaN}}',
        '{"metadata": {"loss": Infinity}}',
        '{"metadata": {"note": "\\ud800"}}',
        '{"metadata": {"\\udfff": 1}}',
    ],
)
def test_patch_model_refuses_bad_metadata(client: TestClient, body: str) -> None:
    create_model(client, metadata={"kept": True})
    _error(_raw_patch(client, "/v1/models/demo", body), 422, "invalid_metadata")
    assert client.get("/v1/models/demo").json()["metadata"] == {"kept": True}


def test_metadata_size_limit_applies_to_models_and_versions(
    small_metadata_client: TestClient, tmp_path: Path
) -> None:
    client = small_metadata_client
    create_model(client)
    _push(client, tmp_path)
    fits = {"k": "x" * 20}  # {"k":"xxxxxxxxxxxxxxxxxxxx"} is 28 bytes
    assert client.patch("/v1/models/demo", json={"metadata": fits}).status_code == 200
    assert client.patch("/v1/models/demo/versions/1", json={"metadata": fits}).status_code == 200
    too_big = {"k": "x" * 40}
    for path in ("/v1/models/demo", "/v1/models/demo/versions/1"):
        error = _error(client.patch(path, json={"metadata": too_big}), 422, "invalid_metadata")
        assert error["details"]["limit"] == 32
    # multi-byte characters count as their UTF-8 bytes
    _error(client.patch("/v1/models/demo", json={"metadata": {"k": "é" * 15}}), 422, "invalid_metadata")
    created = client.post("/v1/models", json={"name": "other", "architecture": "mlp", "metadata": too_big})
    _error(created, 422, "invalid_metadata")
    assert client.get("/v1/models/other").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "renamed"}',
        '{"description": "x", "metdata": {}}',
        '{"description": 5}',
        '{"description": "' + "x" * 10_001 + '"}',
        '{"description": "nul \\u0000 inside"}',
        '{"description": "lone \\ud800"}',
        "[]",
        "{not json",
        '{"metadata": ' + "[" * 5000 + "]" * 5000 + "}",  # too deep to parse at all
    ],
)
def test_patch_model_refuses_bad_bodies(client: TestClient, body: str) -> None:
    create_model(client, description="kept")
    _error(_raw_patch(client, "/v1/models/demo", body), 422, "invalid_request")
    assert client.get("/v1/models/demo").json()["description"] == "kept"


def test_patch_unknown_model(client: TestClient) -> None:
    _error(client.patch("/v1/models/ghost", json={"description": "x"}), 404, "model_not_found")


def test_description_text_is_checked_when_creating_too(client: TestClient) -> None:
    for description in ("nul \x00 inside", "lone \ud800"):
        body = json.dumps({"name": "demo", "architecture": "mlp", "description": description})
        response = client.post("/v1/models", content=body, headers={"Content-Type": "application/json"})
        _error(response, 422, "invalid_request")
    assert create_model(client, description="ünïcødé ✓")["description"] == "ünïcødé ✓"


# --- PATCH /v1/models/{model}/versions/{ref} ----------------------------------------------------------


def test_versions_have_a_description_and_patch_edits_them_by_any_ref(
    client: TestClient, tmp_path: Path
) -> None:
    create_model(client)
    path = save(SimpleModel().state_dict(), tmp_path / "w.pt")
    first = upload(client, "demo", path, metadata='{"acc": 0.9}').json()
    assert first["description"] is None and first["metadata"] == {"acc": 0.9}
    _push(client, tmp_path)
    client.put("/v1/models/demo/aliases/production", json={"version": 1})

    by_number = client.patch("/v1/models/demo/versions/1", json={"description": "baseline"})
    assert by_number.status_code == 200, by_number.text
    assert by_number.json()["description"] == "baseline" and by_number.json()["metadata"] == {"acc": 0.9}
    by_alias = client.patch("/v1/models/demo/versions/production", json={"metadata": {"acc": 0.95}}).json()
    assert by_alias["version"] == 1 and by_alias["metadata"] == {"acc": 0.95}
    assert by_alias["description"] == "baseline"
    by_latest = client.patch("/v1/models/demo/versions/latest", json={"description": "newest"}).json()
    assert by_latest["version"] == 2

    shown = client.get("/v1/models/demo/versions/1").json()
    assert shown == {**first, "description": "baseline", "metadata": {"acc": 0.95}}
    listed = client.get("/v1/models/demo/versions").json()["items"]
    assert [v["description"] for v in listed] == ["baseline", "newest"]
    cleared = client.patch("/v1/models/demo/versions/1", json={"description": None, "metadata": {}}).json()
    assert cleared["description"] is None and cleared["metadata"] == {}
    assert cleared["artifacts"] == first["artifacts"] and cleared["source"] == first["source"]


def test_patch_version_errors(client: TestClient, tmp_path: Path) -> None:
    _error(client.patch("/v1/models/ghost/versions/1", json={}), 404, "model_not_found")
    _error(client.patch("/v1/models/ghost/versions/latest", json={"nope": 1}), 404, "model_not_found")
    create_model(client)
    _error(client.patch("/v1/models/demo/versions/1", json={}), 404, "version_not_found")
    _error(client.patch("/v1/models/demo/versions/latest", json={}), 404, "version_not_found")
    _push(client, tmp_path)
    _error(client.patch("/v1/models/demo/versions/1", json={"nope": 1}), 422, "invalid_request")
    _error(client.patch("/v1/models/demo/versions/1", json={"metadata": [1]}), 422, "invalid_metadata")
    _error(
        _raw_patch(client, "/v1/models/demo/versions/1", '{"metadata": {"x": NaN}}'), 422, "invalid_metadata"
    )
    assert client.get("/v1/models/demo/versions/1").json()["metadata"] == {}


# --- GET /v1/models?q=&architecture= ------------------------------------------------------------------


def _names(client: TestClient, **params: Any) -> list[str]:
    response = client.get("/v1/models", params=params)
    assert response.status_code == 200, response.text
    return [m["name"] for m in response.json()["items"]]


def test_search_by_name_and_architecture(client: TestClient) -> None:
    for name, architecture in [
        ("resnet-small", "cnn"),
        ("resnet-large", "cnn"),
        ("tiny-resnet", "mlp"),
        ("bert-base", "transformer-encoder"),
        ("a_b", "mlp"),
        ("axb", "mlp"),
        ("v1.0", "mlp"),
        ("v100", "mlp"),
    ]:
        create_model(client, name, architecture)
    assert _names(client, q="resnet") == ["resnet-large", "resnet-small", "tiny-resnet"]
    assert _names(client, q="RESNET") == ["resnet-large", "resnet-small", "tiny-resnet"]
    assert _names(client, architecture="cnn") == ["resnet-large", "resnet-small"]
    assert _names(client, q="resnet", architecture="mlp") == ["tiny-resnet"]
    assert _names(client, q="bert", architecture="cnn") == []
    assert _names(client, architecture="no-such-architecture") == []
    # LIKE wildcards match literally
    assert _names(client, q="a_b") == ["a_b"]
    assert _names(client, q="_") == ["a_b"]
    assert _names(client, q="%") == []
    assert _names(client, q="v1.0") == ["v1.0"]
    # an empty filter is no filter
    assert len(_names(client, q="", architecture="")) == 8
    _error(client.get("/v1/models", params={"q": "x" * 129}), 422, "invalid_request")


def test_name_search_by_the_trigram_index_finds_what_the_scan_finds(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [
        "resnet-small",
        "tiny-resnet",
        "net-01",
        "bert-base",
        "a_b",
        "v1.0",
        "gone-resnet",
        "x.or.y",
    ]:
        create_model(client, name, "mlp")
    assert client.delete("/v1/models/gone-resnet").status_code == 204
    queries = [
        "res",
        "RESNET",
        "net-",
        "et-0",
        "v1.",
        "a_b",
        "_b",
        "ab",
        '"re',
        "a*b",
        "or",
        ".or.",
        "or(",
        "zzz",
    ]
    by_index = {q: _names(client, q=q) for q in queries}
    # Characters no name holds (FTS5 refuses a NUL) find nothing.
    assert _names(client, q="res\x00") == _names(client, q="net\u00e9") == []
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.engine.connect() as conn:
        # On SQLite the index answered (this SQLite has FTS5); PostgreSQL's pg_trgm needs nothing here.
        assert service.uses_trigram_index(conn, "res") == (conn.dialect.name == "sqlite")
        assert not service.uses_trigram_index(conn, "re")
        # A string more names hold than the index is asked for goes to the scan in name order.
        monkeypatch.setattr(name_search, "MAX_INDEXED_MATCHES", 2)
        assert not service.uses_trigram_index(conn, "res")
        assert _names(client, q="res") == by_index["res"]
    monkeypatch.setattr(service, "uses_trigram_index", lambda conn, q: False)
    by_scan = {q: _names(client, q=q) for q in queries}
    assert by_index == by_scan
    assert by_index["res"] == ["resnet-small", "tiny-resnet"]  # not the deleted model
    assert by_index["RESNET"] == by_index["res"] and by_index["et-0"] == ["net-01"]
    assert by_index[".or."] == ["x.or.y"] and by_index['"re'] == by_index["zzz"] == []


def _walk(client: TestClient, params: dict[str, Any], *, resend_filters: bool = True) -> list[str]:
    seen: list[str] = []
    query = dict(params)
    while True:
        page = client.get("/v1/models", params=query).json()
        assert len(page["items"]) <= query["limit"], page
        seen += [m["name"] for m in page["items"]]
        if page["next_cursor"] is None:
            return seen
        query = {
            **(params if resend_filters else {}),
            "limit": params["limit"],
            "cursor": page["next_cursor"],
        }


def test_a_cursor_continues_the_filtered_list(client: TestClient) -> None:
    for i in range(12):
        create_model(client, f"net-{i:02d}" if i % 3 else f"other-{i:02d}", "mlp" if i % 2 else "cnn")
    every = _names(client, limit=500)
    for filters in ({"q": "NET"}, {"architecture": "mlp"}, {"q": "net", "architecture": "cnn"}, {}):
        expected = [
            name
            for name in every
            if filters.get("q", "").lower() in name
            and (
                "architecture" not in filters
                or client.get(f"/v1/models/{name}").json()["architecture"] == filters["architecture"]
            )
        ]
        assert expected  # the case is not vacuous
        for limit in (1, 2, 5):
            params = {**filters, "limit": limit}
            assert _walk(client, params) == expected, params
            # the cursor alone carries the filters
            assert _walk(client, params, resend_filters=False) == expected, params


def test_a_cursor_with_other_filters_is_refused(client: TestClient) -> None:
    for name in ("net-a", "net-b", "net-c", "zz"):
        create_model(client, name)
    cursor = client.get("/v1/models", params={"q": "net", "limit": 1}).json()["next_cursor"]
    assert cursor
    error = _error(client.get("/v1/models", params={"q": "zz", "cursor": cursor}), 422, "invalid_cursor")
    assert error["details"]["parameter"] == "q"
    _error(client.get("/v1/models", params={"q": "", "cursor": cursor}), 422, "invalid_cursor")
    _error(client.get("/v1/models", params={"architecture": "mlp", "cursor": cursor}), 422, "invalid_cursor")
    unfiltered = client.get("/v1/models", params={"limit": 1}).json()["next_cursor"]
    _error(client.get("/v1/models", params={"q": "net", "cursor": unfiltered}), 422, "invalid_cursor")
    assert _names(client, q="net", cursor=cursor) == ["net-b", "net-c"]
    assert _names(client, cursor=unfiltered) == ["net-b", "net-c", "zz"]


@pytest.mark.parametrize(
    "body",
    [
        {"after": "a", "filters": []},
        {"after": "a", "filters": {"q": 5}},
        {"after": "a", "filters": {"q": "x" * 2000}},
        {"after": "a", "filters": {str(i): "" for i in range(20)}},
        {"after": "a", "filters": None},
    ],
)
def test_forged_cursor_filters_are_refused(client: TestClient, body: dict[str, Any]) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(body).encode()).decode()
    _error(client.get("/v1/models", params={"cursor": cursor}), 422, "invalid_cursor")


# --- unknown query parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/models", ["architecture", "cursor", "limit", "q"]),
        ("GET", "/v1/models/demo", []),
        ("PATCH", "/v1/models/demo", []),
        ("GET", "/v1/models/demo/versions", ["cursor", "limit", "order"]),
        ("POST", "/v1/models/demo/versions", ["metadata"]),
        ("GET", "/v1/models/demo/versions/1", []),
        ("DELETE", "/v1/models/demo/versions/1", ["force"]),
        ("GET", "/v1/models/demo/versions/1/artifacts/weights", ["format"]),
        ("HEAD", "/v1/models/demo/versions/1/artifacts/weights", ["format"]),
        ("GET", "/v1/jobs", ["cursor", "limit", "model", "status"]),
        ("GET", "/v1/architectures", ["cursor", "limit"]),
        ("GET", "/healthz", []),
    ],
)
def test_unknown_query_parameters_are_refused_everywhere(
    client: TestClient, tmp_path: Path, method: str, path: str, allowed: list[str]
) -> None:
    create_model(client)
    _push(client, tmp_path)
    response = client.request(method, path, params={"bogus": "1"})
    assert response.status_code == 422, response.text
    if method != "HEAD":
        error = _error(response, 422, "invalid_request")
        assert "'bogus'" in error["message"]
        assert all(name in error["message"] for name in allowed)
        assert error["details"] == {"unknown": ["bogus"], "allowed": allowed}
    assert client.get("/v1/models/demo/versions/1").status_code == 200  # nothing was deleted
    assert client.get("/v1/models/demo").json()["latest_version"] == 1  # nothing was uploaded


def test_unknown_parameters_are_named_next_to_known_ones(client: TestClient) -> None:
    error = _error(client.get("/v1/models?limit=5&qq=x&Limit=2&q=a"), 422, "invalid_request")
    assert error["details"]["unknown"] == ["Limit", "qq"]
    assert "'Limit', 'qq'" in error["message"] and "architecture, cursor, limit, q" in error["message"]
    # checked before the parameters' values and before the model lookup
    _error(client.get("/v1/models?limit=0&bogus=1"), 422, "invalid_request")
    _error(client.get("/v1/models/ghost?bogus=1"), 422, "invalid_request")


def test_declared_query_parameters_keep_working(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    path = save(SimpleModel().state_dict(), tmp_path / "w.pt")
    assert upload(client, "demo", path, metadata='{"a": 1}').json()["metadata"] == {"a": 1}
    assert (
        client.get("/v1/models/demo/versions/1/artifacts/weights", params={"format": "pt"}).status_code == 200
    )
    assert client.get("/v1/models/demo/versions", params={"limit": 1}).status_code == 200
    assert client.get("/v1/jobs", params={"model": "demo", "status": "queued"}).status_code == 200
    assert client.get("/v1/models", params={"q": "de", "architecture": "simple-linear"}).status_code == 200
    assert client.delete("/v1/models/demo/versions/1", params={"force": "false"}).status_code == 204


# --- DELETE /v1/models/{model}/versions/{ref} with aliases --------------------------------------------


def test_deleting_an_aliased_version_needs_force(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    for _ in range(3):
        _push(client, tmp_path)
    for alias in ("staging", "production"):
        client.put(f"/v1/models/demo/aliases/{alias}", json={"version": 2})
    client.put("/v1/models/demo/aliases/canary", json={"version": 3})

    for ref in ("2", "production"):
        error = _error(client.delete(f"/v1/models/demo/versions/{ref}"), 409, "alias_in_use")
        assert error["details"]["aliases"] == ["production", "staging"]
        assert "force=true" in error["message"]
    _error(client.delete("/v1/models/demo/versions/2", params={"force": "false"}), 409, "alias_in_use")
    assert client.get("/v1/models/demo/versions/2").status_code == 200
    assert client.get("/v1/models/demo").json()["aliases"] == {"canary": 3, "production": 2, "staging": 2}

    plain = client.delete("/v1/models/demo/versions/1")  # no alias: no force needed
    assert plain.status_code == 204 and REMOVED_ALIASES not in plain.headers

    forced = client.delete("/v1/models/demo/versions/staging", params={"force": "true"})
    assert forced.status_code == 204
    assert forced.headers[REMOVED_ALIASES] == "production, staging"
    assert client.get("/v1/models/demo/versions/2").status_code == 404
    model = client.get("/v1/models/demo").json()
    assert model["aliases"] == {"canary": 3} and model["latest_version"] == 3
    assert client.get("/v1/models/demo/versions/canary").json()["version"] == 3


def test_forced_delete_is_logged(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    create_model(client)
    _push(client, tmp_path)
    client.put("/v1/models/demo/aliases/production", json={"version": 1})
    with caplog.at_level("INFO", logger="weightvault.versions"):
        assert client.delete("/v1/models/demo/versions/1?force=true").status_code == 204
    assert any("production" in record.getMessage() for record in caplog.records)


def test_delete_version_of_unknown_model(client: TestClient) -> None:
    _error(client.delete("/v1/models/ghost/versions/1", params={"force": "true"}), 404, "model_not_found")
    create_model(client)
    _error(client.delete("/v1/models/demo/versions/1"), 404, "version_not_found")


def test_scopes_for_editing_and_deleting(settings: Settings, tmp_path: Path) -> None:
    with TestClient(
        create_app(settings.model_copy(update={"auth": "on"})), raise_server_exceptions=False
    ) as secured:
        with secured.app.state.runtime.sessions() as session:  # type: ignore[attr-defined]
            read, write, admin = (
                {"Authorization": f"Bearer {create_token(session=session, scope=s)[1]}"}
                for s in ("read", "write", "admin")
            )
        secured.headers.update(write)
        create_model(secured)
        _push(secured, tmp_path)
        secured.put("/v1/models/demo/aliases/production", json={"version": 1})
        edit = {"description": "x"}
        for path in ("/v1/models/demo", "/v1/models/demo/versions/1"):
            assert secured.patch(path, json=edit, headers=read).status_code == 403
            assert secured.patch(path, json=edit, headers=write).status_code == 200
        assert secured.get("/v1/models?q=de&bogus=1", headers={"Authorization": ""}).status_code == 401
        assert (
            secured.get("/v1/models", params={"q": "de"}, headers=read).json()["items"][0]["description"]
            == "x"
        )
        forced = "/v1/models/demo/versions/1?force=true"
        assert secured.delete(forced, headers=write).status_code == 403
        assert secured.delete(forced, headers=admin).status_code == 204


# --- schema, migration, OpenAPI -----------------------------------------------------------------------


def test_migration_fills_in_metadata_for_existing_models(settings: Settings, database_url: str) -> None:
    upgrade(database_url, "0003")
    models_before = table(
        "models",
        column("name"),
        column("architecture"),
        column("config", JSON()),
        column("description"),
        column("created_at", UTCDateTime()),
        column("last_version"),
    )
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            insert(models_before).values(
                name="old",
                architecture="simple-linear",
                config={},
                description="from before",
                created_at=datetime.now(UTC),
                last_version=0,
            )
        )
    engine.dispose()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # migrates to head
        model = client.get("/v1/models/old").json()
        assert model["metadata"] == {} and model["description"] == "from before"
        assert client.patch("/v1/models/old", json={"metadata": {"a": 1}}).json()["metadata"] == {"a": 1}
        assert _names(client, architecture="simple-linear") == ["old"]


def test_openapi_describes_the_new_fields_and_parameters(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    assert "patch" in paths["/v1/models/{model}"]
    assert "patch" in paths["/v1/models/{model}/versions/{ref}"]
    listing = {p["name"] for p in paths["/v1/models"]["get"]["parameters"]}
    assert {"q", "architecture", "limit", "cursor"} <= listing
    deleting = {p["name"] for p in paths["/v1/models/{model}/versions/{ref}"]["delete"]["parameters"]}
    assert "force" in deleting
    assert "409" in paths["/v1/models/{model}/versions/{ref}"]["delete"]["responses"]
    assert "metadata" in schemas["ModelRead"]["required"]
    assert "description" in schemas["VersionRead"]["required"]
    for body in ("ModelUpdate", "VersionUpdate"):
        assert set(schemas[body]["properties"]) == {"description", "metadata"}
        assert schemas[body]["properties"]["metadata"]["type"] == "object"
        assert schemas[body]["additionalProperties"] is False


def test_versions_list_newest_first_with_cursors(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    numbers = [_push(client, tmp_path) for _ in range(5)]
    assert client.delete(f"/v1/models/demo/versions/{numbers[2]}").status_code == 204
    first = client.get("/v1/models/demo/versions", params={"order": "desc", "limit": 2}).json()
    assert [v["version"] for v in first["items"]] == [5, 4]
    second = client.get("/v1/models/demo/versions", params={"cursor": first["next_cursor"]}).json()
    assert [v["version"] for v in second["items"]] == [2, 1]
    assert second["next_cursor"] is None
    assert all(len(v["artifacts"]) == 3 for v in first["items"] + second["items"])
    ascending = client.get("/v1/models/demo/versions", params={"order": "asc", "limit": 2}).json()
    assert [v["version"] for v in ascending["items"]] == [1, 2]
    # A cursor continues the order it was made in; asking for the other one with it is refused.
    mixed = client.get("/v1/models/demo/versions", params={"order": "asc", "cursor": first["next_cursor"]})
    _error(mixed, 422, "invalid_cursor")
    assert client.get("/v1/models/demo/versions", params={"order": "up"}).status_code == 422
    assert client.get("/v1/models/nope/versions", params={"order": "desc"}).status_code == 404
    # The listed versions are the ones GET .../versions/{n} shows.
    assert first["items"][0] == client.get("/v1/models/demo/versions/5").json()
