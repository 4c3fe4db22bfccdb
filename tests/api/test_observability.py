"""Metrics, request ids, structured logs and readiness."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select

from app.artifacts.models import Artifact
from app.ops.logs import ContextFilter, JsonFormatter, request_id_var
from app.versions.models import Version
from tests.checkpoints import SimpleModel, save
from tests.conftest import create_model, upload
from tests.fixtures.stored import store_as_whole_files


def _samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = client.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_bytes_uploads_and_storage(client: TestClient, tmp_path: Path) -> None:
    before = _samples(client)
    create_model(client)
    body = save(SimpleModel().state_dict(), tmp_path / "w.pt")
    assert upload(client, "demo", body).status_code == 201
    assert client.post("/v1/models/demo/versions", content=b"junk").status_code == 422
    client.post("/v1/models/demo/versions/1/onnx")
    after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    route = "/v1/models/{model}/versions"
    assert delta("weightvault_http_requests_total", method="POST", route=route, status="201") == 1
    assert delta("weightvault_http_requests_total", method="POST", route=route, status="422") == 1
    assert delta("weightvault_http_received_bytes_total", route=route) == body.stat().st_size + len(b"junk")
    assert delta("weightvault_uploads_total", outcome="accepted") == 1
    assert delta("weightvault_uploads_total", outcome="unreadable_checkpoint") == 1
    assert delta("weightvault_http_request_duration_seconds_count", method="POST", route=route) == 2
    assert after[("weightvault_job_queue_depth", frozenset())] == 1
    assert after[("weightvault_jobs", frozenset({("status", "queued")}))] == 1
    # Bytes at rest (tensor blobs once, recipes), not the three downloads' sizes: what the store holds.
    on_disk = _blobs_on_disk(client)
    assert after[("weightvault_storage_blobs", frozenset())] == len(on_disk) > 3
    assert after[("weightvault_storage_bytes", frozenset())] == sum(on_disk.values())


def _blobs_on_disk(client: TestClient) -> dict[str, int]:
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    return {path.name: path.stat().st_size for path in store.blobs_dir.glob("??/*")}


def test_storage_metrics_count_a_tensor_once_and_a_whole_file_blob_as_stored(
    client: TestClient, tmp_path: Path
) -> None:
    create_model(client)
    weights = SimpleModel().state_dict()
    assert upload(client, "demo", save(weights, tmp_path / "a.pt")).status_code == 201
    first, before = _samples(client)[("weightvault_storage_bytes", frozenset())], _blobs_on_disk(client)
    # The same weights as a training checkpoint: its recipes are new at rest, no tensor is.
    checkpoint = {"epoch": 3, "model_state_dict": weights}
    response = upload(client, "demo", save(checkpoint, tmp_path / "b.pt"))
    assert response.status_code == 201
    second, on_disk = _samples(client), _blobs_on_disk(client)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        recipes = set(
            session.scalars(
                select(Artifact.recipe_sha256)
                .join(Version)
                .where(Version.number == response.json()["version"])
            )
        )
    new = set(on_disk) - set(before)
    assert new and new <= recipes
    assert second[("weightvault_storage_bytes", frozenset())] == sum(on_disk.values())
    assert second[("weightvault_storage_bytes", frozenset())] - first == sum(on_disk[name] for name in new)
    # A whole-file artifact (a data dir written before recipes) counts its file's size once.
    store_as_whole_files(client)
    third = _samples(client)
    assert third[("weightvault_storage_bytes", frozenset())] == sum(_blobs_on_disk(client).values())


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert (
        client.get("/v1/models/ghost", headers={"X-Request-ID": "trace-123"}).headers["x-request-id"]
        == "trace-123"
    )
    assert (
        client.get("/healthz", headers={"X-Request-ID": "bad id\\with junk"}).headers["x-request-id"]
        != "bad id\\with junk"
    )


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.makeLogRecord(
        {"name": "weightvault.access", "levelname": "INFO", "msg": "GET /x 200", "status": 200}
    )
    token = request_id_var.set("abc123")
    try:
        ContextFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "abc123" and line["message"] == "GET /x 200" and line["status"] == 200


def test_readyz_fails_when_storage_or_database_is_unusable(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert client.get("/readyz").status_code == 200
    shutil.rmtree(runtime.store.staging_root)
    broken = client.get("/readyz")
    assert broken.status_code == 503
    assert broken.json()["error"]["details"]["checks"] == {"database": True, "storage": False}
    runtime.store.staging_root.mkdir()
    monkeypatch.setattr(runtime, "engine", create_engine("sqlite:////nonexistent-dir/x.db"))
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json()["error"]["details"]["checks"]["database"] is False
