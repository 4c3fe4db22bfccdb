"""Property-based fuzzing over the OpenAPI schema (schemathesis): no input may produce a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from app.main import create_app
from app.settings import Settings
from tests.checkpoints import SimpleModel, save

schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(Settings(_env_file=None, data_dir=root / "data"))  # type: ignore[call-arg]
    with TestClient(app, raise_server_exceptions=False) as client:
        client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"})
        client.post(
            "/v1/models/demo/versions", content=save(SimpleModel().state_dict(), root / "w.pt").read_bytes()
        )
        yield client


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_makes_the_server_fail(case: schemathesis.Case, fuzz_client: TestClient) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    response = fuzz_client.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs.get("headers"),
        json=kwargs.get("json"),
        content=kwargs.get("data") if isinstance(kwargs.get("data"), bytes | str) else None,
    )
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if (
        case.method != "HEAD"
        and response.status_code >= 400
        and "json" in response.headers.get("content-type", "")
    ):
        body = response.json()
        assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
