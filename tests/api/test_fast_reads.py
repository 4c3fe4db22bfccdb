"""The hot GETs answered by ``app.api.fast_reads`` are byte for byte what FastAPI answers, and every case
the fast path does not answer (errors, odd parameters, refused tokens) is FastAPI's answer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api import fast_reads
from app.auth.service import create_token, revoke_token
from app.main import create_app
from app.ops.logs import request_id_var
from app.settings import Settings
from tests.checkpoints import SimpleModel, save
from tests.conftest import create_model, upload


def _answer(client: TestClient, path: str, *, fast: bool, **kwargs: Any) -> tuple[int, bytes, dict[str, str]]:
    client.app.state.fast_reads = fast  # type: ignore[attr-defined]
    response = client.get(path, **kwargs)
    headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    return response.status_code, response.content, headers


@pytest.fixture
def answered_fast(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the fast path answered itself (a read it gave up on is not counted)."""
    seen: list[str] = []
    original = fast_reads.FastReads._run

    async def spy(scope: Any, answer: Any, cache: Any, leases: Any, arrived: float) -> bytes:
        body = await original(scope, answer, cache, leases, arrived)
        seen.append(scope["path"])
        return body

    monkeypatch.setattr(fast_reads.FastReads, "_run", staticmethod(spy))
    return seen


def _populate(client: TestClient, tmp_path: Path) -> None:
    create_model(client, "demo", metadata={"team": "vision", "note": "caf\u00e9"})
    create_model(client, "other-mlp", "mlp")
    create_model(client, "x_y.z")
    for seed in range(3):
        weights = save(SimpleModel().state_dict(), tmp_path / f"w{seed}.pt")
        assert upload(client, "demo", weights).status_code == 201
    assert client.put("/v1/models/demo/aliases/prod", json={"version": 2}).is_success
    assert client.patch("/v1/models/demo/versions/1", json={"metadata": {"acc": 0.5}}).is_success


PATHS = [
    "/v1/models/demo",
    "/v1/models/ghost",
    "/v1/models/Bad%20Name",
    "/v1/models/demo?x=1",
    "/v1/models/demo/",
    f"/v1/models/{'a' * 1100}",
    "/v1/models/demo/versions/1",
    "/v1/models/demo/versions/prod",
    "/v1/models/demo/versions/latest",
    "/v1/models/demo/versions/9",
    "/v1/models/demo/versions/no-such-alias",
    "/v1/models/ghost/versions/1",
    "/v1/models/demo/versions/1?format=x",
    "/v1/models/demo/versions",
    "/v1/models/demo/versions?limit=2",
    "/v1/models/demo/versions?limit=2&order=desc",
    "/v1/models/demo/versions?order=asc",
    "/v1/models/demo/versions?order=sideways",
    "/v1/models/demo/versions?limit=0",
    "/v1/models/demo/versions?limit=abc",
    "/v1/models/demo/versions?limit=007",
    "/v1/models/demo/versions?limit=1&limit=2",
    "/v1/models/demo/versions?cursor=garbage",
    "/v1/models/demo/versions?sort=desc",
    "/v1/models/ghost/versions",
    "/v1/models",
    "/v1/models?limit=1",
    "/v1/models?q=DEM",
    "/v1/models?q=_",
    "/v1/models?q=%25",
    "/v1/models?q=",
    "/v1/models?architecture=mlp",
    "/v1/models?q=o&architecture=simple-linear",
    "/v1/models?q=" + "q" * 129,
    "/v1/models?name=demo",
]


def test_fast_answers_equal_fastapi_answers(
    client: TestClient, tmp_path: Path, answered_fast: list[str]
) -> None:
    _populate(client, tmp_path)
    for path in PATHS:
        assert _answer(client, path, fast=True) == _answer(client, path, fast=False), path
    # Cursors: the next page of each list, through both paths.
    for path in ("/v1/models/demo/versions?limit=1&order=desc", "/v1/models?limit=1"):
        cursor = client.get(path).json()["next_cursor"]
        assert cursor
        following = f"{path}&cursor={cursor}"
        assert _answer(client, following, fast=True) == _answer(client, following, fast=False)
    # The plain reads were answered by the fast path, and its errors were not.
    assert "/v1/models/demo" in answered_fast and "/v1/models/demo/versions/prod" in answered_fast
    assert "/v1/models/demo/versions" in answered_fast and "/v1/models" in answered_fast
    assert "/v1/models/ghost" not in answered_fast


VERSION_READS = (
    "/v1/models/demo/versions/1",
    "/v1/models/demo/versions/prod",
    "/v1/models/demo/versions/latest",
    "/v1/models/demo/versions?limit=2",
    "/v1/models/demo/versions?order=desc",
)
MODEL_READS = ("/v1/models/demo", "/v1/models", "/v1/models?q=dem", "/v1/models?limit=1")
CACHED = VERSION_READS + MODEL_READS


def _fresh_everywhere(client: TestClient) -> dict[str, tuple[int, bytes, dict[str, str]]]:
    """Each cached read answered twice by the fast path (the second from its cache), each time equal to
    FastAPI's answer, which reads the database."""
    answers = {}
    for path in CACHED:
        first, again = _answer(client, path, fast=True), _answer(client, path, fast=True)
        assert first == again == _answer(client, path, fast=False), path
        answers[path] = first
    return answers


def test_kept_version_reads_follow_every_write(
    client: TestClient, tmp_path: Path, answered_fast: list[str]
) -> None:
    _populate(client, tmp_path)
    before = _fresh_everywhere(client)
    assert answered_fast.count("/v1/models/demo/versions/1") == 2
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]

    # Through the API: an edit, an alias moved, the latest version deleted.
    assert client.patch("/v1/models/demo/versions/1", json={"description": "first"}).is_success
    assert client.put("/v1/models/demo/aliases/prod", json={"version": 1}).is_success
    assert client.request("DELETE", "/v1/models/demo/versions/3", params={"force": "true"}).status_code == 204
    after = _fresh_everywhere(client)
    assert json.loads(after["/v1/models/demo/versions/1"][1])["description"] == "first"
    assert json.loads(after["/v1/models/demo/versions/prod"][1])["version"] == 1
    assert json.loads(after["/v1/models/demo/versions/latest"][1])["version"] == 2
    assert all(after[path] != before[path] for path in CACHED)

    # Behind the API's back (a maintenance script's SQL): an artifact's row, a version's, an alias, a model's.
    with engine.begin() as conn:
        conn.execute(text("UPDATE artifacts SET size = size + 1 WHERE kind = 'weights'"))
    changed = _fresh_everywhere(client)
    assert all(changed[path] != after[path] for path in VERSION_READS)
    with engine.begin() as conn:
        conn.execute(text("UPDATE versions SET description = 'edited by hand'"))
        conn.execute(text("DELETE FROM aliases"))
    _fresh_everywhere(client)
    assert client.get("/v1/models/demo/versions/prod").status_code == 404
    assert client.get("/v1/models/demo/versions/2").json()["description"] == "edited by hand"
    assert client.get("/v1/models/demo").json()["aliases"] == {}
    before = _fresh_everywhere(client)
    with engine.begin() as conn:
        conn.execute(text("UPDATE models SET description = 'model by hand' WHERE name = 'demo'"))
    after = _fresh_everywhere(client)
    assert all(after[path] != before[path] for path in MODEL_READS)
    assert json.loads(after["/v1/models?q=dem"][1])["items"][0]["description"] == "model by hand"

    # Lists follow models made and removed.
    create_model(client, "demo-two")
    assert [m["name"] for m in client.get("/v1/models?q=dem").json()["items"]] == ["demo", "demo-two"]
    _fresh_everywhere(client)
    assert client.delete("/v1/models/demo-two").status_code == 204
    assert [m["name"] for m in client.get("/v1/models?q=dem").json()["items"]] == ["demo"]
    _fresh_everywhere(client)


def test_a_model_made_again_under_a_deleted_ones_name_is_read_afresh(
    client: TestClient, tmp_path: Path
) -> None:
    # SQLite may give the new model the deleted one's id: what was kept for the old one must not answer.
    create_model(client, "again")
    assert upload(client, "again", save(SimpleModel().state_dict(), tmp_path / "a.pt")).status_code == 201
    old = _answer(client, "/v1/models/again/versions/1", fast=True)
    assert client.delete("/v1/models/again").status_code == 204
    create_model(client, "again")
    assert upload(client, "again", save(SimpleModel().state_dict(), tmp_path / "b.pt")).status_code == 201
    new = _answer(client, "/v1/models/again/versions/1", fast=True)
    assert new == _answer(client, "/v1/models/again/versions/1", fast=False)
    assert json.loads(new[1])["source"]["sha256"] != json.loads(old[1])["source"]["sha256"]


def test_without_the_revision_triggers_nothing_is_kept(settings: Settings, tmp_path: Path) -> None:
    with TestClient(create_app(settings)) as client:
        _populate(client, tmp_path)
        with client.app.state.runtime.engine.begin() as conn:  # type: ignore[attr-defined]
            if conn.dialect.name == "postgresql":
                conn.execute(text("DROP TRIGGER wv_artifacts_revision ON artifacts"))
            else:
                conn.execute(text("DROP TRIGGER wv_artifacts_update_revision"))
    # A server started on that database keeps no read: a change the revision misses is still seen.
    with TestClient(create_app(settings)) as client:
        path = "/v1/models/demo/versions/1"
        before = _answer(client, path, fast=True)
        assert _answer(client, path, fast=True) == before
        with client.app.state.runtime.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(text("UPDATE artifacts SET size = size + 1"))
        after = _answer(client, path, fast=True)
        assert after != before and after == _answer(client, path, fast=False)


LEASE_SECONDS = 0.5


@pytest.fixture
def leased(settings: Settings) -> Iterator[TestClient]:
    """A server that reuses a read stamp for half a second: wide enough to see from a test."""
    chosen = settings.model_copy(update={"read_lease_ms": LEASE_SECONDS * 1000})
    with TestClient(create_app(chosen), raise_server_exceptions=False) as client:
        yield client


def test_a_write_is_answered_only_once_no_kept_read_can_hide_it(leased: TestClient, tmp_path: Path) -> None:
    client = leased
    _populate(client, tmp_path)
    assert client.get("/v1/models/demo/versions/prod").json()["version"] == 2  # its stamp is now leased
    started = time.monotonic()
    assert client.put("/v1/models/demo/aliases/prod", json={"version": 1}).is_success
    # The answer waited out the lease: the read right after it cannot reuse the stamp read before the write.
    assert time.monotonic() - started >= LEASE_SECONDS
    assert client.get("/v1/models/demo/versions/prod").json()["version"] == 1
    assert client.get("/v1/models/demo").json()["aliases"] == {"prod": 1}
    assert client.request("DELETE", "/v1/models/demo/versions/3", params={"force": "true"}).status_code == 204
    assert client.get("/v1/models/demo/versions/3").status_code == 404
    assert [v["version"] for v in client.get("/v1/models/demo/versions").json()["items"]] == [1, 2]
    # An error answer waits too: what it reports may have come from a write someone else just made.
    started = time.monotonic()
    assert client.get("/v1/models/demo/versions/9").status_code == 404
    assert time.monotonic() - started >= LEASE_SECONDS


def test_a_change_behind_the_apis_back_is_seen_within_the_lease(leased: TestClient, tmp_path: Path) -> None:
    client = leased
    _populate(client, tmp_path)
    path = "/v1/models/demo/versions/1"
    before = client.get(path).json()
    leased_at = time.monotonic()
    with client.app.state.runtime.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE versions SET description = 'edited by hand'"))
    # Nobody was answered about this change: for the rest of the lease the kept body may still be served
    # without asking the database (which is what makes a kept read cost no statement)...
    if time.monotonic() - leased_at < LEASE_SECONDS * 0.8:
        assert client.get(path).json() == before
    # ...and once the lease has passed, every read shows it.
    time.sleep(max(0.0, leased_at + LEASE_SECONDS - time.monotonic()))
    assert client.get(path).json()["description"] == "edited by hand"


def test_a_postgres_read_connection_the_server_dropped_is_replaced(
    settings: Settings, tmp_path: Path, answered_fast: list[str]
) -> None:
    # No lease: each read below must reach the database.
    chosen = settings.model_copy(update={"read_lease_ms": 0})
    with TestClient(create_app(chosen), raise_server_exceptions=False) as client:
        _check_a_dropped_connection_is_replaced(client, tmp_path, answered_fast)


def _check_a_dropped_connection_is_replaced(
    client: TestClient, tmp_path: Path, answered_fast: list[str]
) -> None:
    loop_reads = client.app.state.runtime.postgres_loop_reads  # type: ignore[attr-defined]
    if loop_reads is None:
        pytest.skip("PostgreSQL's hot reads only: SQLite reads on the loop hold one connection")
    _populate(client, tmp_path)
    expected = _answer(client, "/v1/models/demo/versions/prod", fast=False)
    assert _answer(client, "/v1/models/demo/versions/prod", fast=True) == expected
    pids = [conn.info.backend_pid for conn in loop_reads._idle]
    assert pids and answered_fast == ["/v1/models/demo/versions/prod"]
    with client.app.state.runtime.engine.connect() as conn:  # type: ignore[attr-defined]
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    # The read on the dropped connection fails and FastAPI answers it; the next one is fast again.
    assert _answer(client, "/v1/models/demo/versions/prod", fast=True) == expected
    assert _answer(client, "/v1/models/demo/versions/prod", fast=True) == expected
    assert answered_fast == ["/v1/models/demo/versions/prod"] * 2
    assert all(conn.info.backend_pid not in pids for conn in loop_reads._idle)


def test_search_finds_by_substring_and_architecture(client: TestClient, tmp_path: Path) -> None:
    _populate(client, tmp_path)
    for fast in (True, False):
        client.app.state.fast_reads = fast  # type: ignore[attr-defined]

        def names(query: str) -> list[str]:
            response = client.get(f"/v1/models?{query}")
            assert response.status_code == 200, response.text
            return [item["name"] for item in response.json()["items"]]

        assert names("q=DEM") == ["demo"]
        assert names("q=_y.") == ["x_y.z"]
        assert names("q=%25") == []  # % and _ match literally
        assert names("q=_") == ["x_y.z"]
        assert names("architecture=mlp") == ["other-mlp"]
        assert names("q=o&architecture=simple-linear") == ["demo"]
        assert names("q=o&architecture=mlp") == ["other-mlp"]
        assert names("q=zzz") == []


def test_a_stored_lone_surrogate_is_served_as_fastapi_serves_it(client: TestClient, tmp_path: Path) -> None:
    _populate(client, tmp_path)
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:  # JSON text as an old release could have stored it
        conn.execute(
            text("UPDATE models SET metadata = :m WHERE name = 'demo'"), {"m": '{"a": "bad \\ud800"}'}
        )
    fast = _answer(client, "/v1/models/demo", fast=True)
    assert fast == _answer(client, "/v1/models/demo", fast=False)
    assert fast[0] == 200 and "bad \ufffd" in fast[1].decode()


@pytest.fixture
def secured(settings: Settings) -> Iterator[TestClient]:
    with TestClient(
        create_app(settings.model_copy(update={"auth": "on"})), raise_server_exceptions=False
    ) as client:
        yield client


def test_with_auth_on_a_revoked_token_is_refused_by_the_next_read(
    secured: TestClient, tmp_path: Path, answered_fast: list[str]
) -> None:
    runtime = secured.app.state.runtime  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        admin = create_token(session=session, scope="admin")[1]
        read = create_token(session=session, scope="read")[1]
    as_admin = {"Authorization": f"Bearer {admin}"}
    created = secured.post(
        "/v1/models", json={"name": "demo", "architecture": "simple-linear"}, headers=as_admin
    )
    assert created.status_code == 201
    as_reader = {"Authorization": f"Bearer {read}"}
    for headers in (
        as_reader,
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": f"Bearer {read}x"},
    ):
        for path in ("/v1/models/demo", "/v1/models", "/v1/models/demo/versions"):
            expected = _answer(secured, path, fast=False, headers=headers)
            assert _answer(secured, path, fast=True, headers=headers) == expected, (path, headers)
    assert answered_fast.count("/v1/models/demo") == 1  # the reader's; the refusals were FastAPI's
    assert secured.get("/v1/models/demo", headers=as_reader).status_code == 200
    with runtime.sessions() as session:
        assert revoke_token(session=session, public_id=read.split("_")[1])
    refused = secured.get("/v1/models/demo", headers=as_reader)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_fast_reads_carry_request_id_metrics_and_access_line(
    client: TestClient, answered_fast: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Answered in front of RequestContextMiddleware, a fast read still does what that middleware does."""
    create_model(client, "demo")

    def count() -> float:
        text = client.get("/metrics").text
        line = 'weightvault_http_requests_total{method="GET",route="/v1/models/{model}",status="200"}'
        return next((float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)), 0.0)

    ids: list[str | None] = []

    class SeeRequestId(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            ids.append(request_id_var.get())

    seen = SeeRequestId()
    access = logging.getLogger("weightvault.access")
    before = count()
    access.addHandler(seen)
    try:
        with caplog.at_level(logging.INFO, logger="weightvault.access"):
            given = client.get("/v1/models/demo", headers={"X-Request-ID": "trace-42"})
            generated = client.get("/v1/models/demo")
    finally:
        access.removeHandler(seen)
    assert answered_fast == ["/v1/models/demo", "/v1/models/demo"]
    assert given.headers["x-request-id"] == "trace-42"
    assert len(generated.headers["x-request-id"]) == 32
    assert ids == ["trace-42", generated.headers["x-request-id"]]
    assert count() - before == 2
    lines = [
        r for r in caplog.records if r.name == "weightvault.access" and "/v1/models/demo" in r.getMessage()
    ]
    assert [r.getMessage().split()[:3] for r in lines] == [["GET", "/v1/models/demo", "200"]] * 2
    assert [r.bytes_out for r in lines] == [len(given.content)] * 2


def test_a_request_the_fast_path_cannot_match_is_answered_by_the_app_not_the_server(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong while matching (a Host header that is no URL makes building download URLs
    raise, say), the request goes on to FastAPI: nothing escapes the outermost layer as a bare 500
    without the contract's body, request id or access line."""
    _populate(client, tmp_path)
    expected = _answer(client, "/v1/models/demo/versions", fast=False)

    def broken(*args: Any) -> None:
        raise ValueError("Invalid IPv6 URL")

    monkeypatch.setattr(fast_reads.FastReads, "_read_for", staticmethod(broken))
    assert _answer(client, "/v1/models/demo/versions", fast=True) == expected
    assert client.get("/v1/models/demo/versions").headers.get("x-request-id")
