"""Resumable uploads (tus 1.0): the protocol's answers, resuming after a cut and after a restart,
limits, and the same ingest (and the same refusals) as a direct upload."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from tusclient import client as tus_client

from app.main import create_app
from app.settings import Settings
from app.uploads import service as uploads_service
from app.uploads.models import UploadSession
from tests.checkpoints import SimpleModel
from tests.conftest import create_model, isolated_database, stored_files, version_count
from tests.hostile import hostile_files
from tests.server import running_server

TUS = {"Tus-Resumable": "1.0.0"}


def checkpoint_bytes(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "model_state_dict": SimpleModel().state_dict()}, buffer)
    return buffer.getvalue()


def _metadata(**pairs: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items())


def start(client: TestClient, length: int, model: str = "demo", **headers: str) -> str:
    response = client.post(
        f"/v1/models/{model}/uploads", headers={**TUS, "Upload-Length": str(length), **headers}
    )
    assert response.status_code == 201, response.text
    assert response.headers["Tus-Resumable"] == "1.0.0" and "Upload-Expires" in response.headers
    return str(response.headers["Location"])


def patch(client: TestClient, location: str, offset: int, data: bytes, **headers: str) -> httpx.Response:
    return client.patch(
        location,
        content=data,
        headers={
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            **headers,
        },
    )


def offset_of(client: TestClient, location: str) -> int:
    response = client.head(location, headers=TUS)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    return int(response.headers["Upload-Offset"])


@pytest.fixture
def small_limits(settings: Settings) -> Iterator[TestClient]:
    limited = settings.model_copy(update={"max_upload_bytes": 4096, "max_open_uploads_per_token": 2})
    with TestClient(create_app(limited), raise_server_exceptions=False) as test_client:
        yield test_client


def test_discovery_and_protocol_refusals(client: TestClient) -> None:
    create_model(client)
    options = client.options("/v1/uploads")
    assert options.status_code == 204 and options.headers["Tus-Version"] == "1.0.0"
    assert set(options.headers["Tus-Extension"].split(",")) == {
        "creation",
        "termination",
        "expiration",
        "checksum",
    }
    assert "sha256" in options.headers["Tus-Checksum-Algorithm"]

    no_version = client.post("/v1/models/demo/uploads", headers={"Upload-Length": "10"})
    assert no_version.status_code == 412 and no_version.json()["error"]["code"] == "unsupported_tus_version"
    no_length = client.post("/v1/models/demo/uploads", headers=TUS)
    assert no_length.status_code == 400 and "Upload-Length" in no_length.json()["error"]["message"]
    assert client.post("/v1/models/nope/uploads", headers={**TUS, "Upload-Length": "1"}).status_code == 404
    bad_meta = client.post(
        "/v1/models/demo/uploads", headers={**TUS, "Upload-Length": "1", "Upload-Metadata": "a !!"}
    )
    assert bad_meta.status_code == 400

    body = checkpoint_bytes()
    location = start(client, len(body))
    wrong_type = client.patch(location, content=body, headers={**TUS, "Upload-Offset": "0"})
    assert wrong_type.status_code == 415
    wrong_offset = patch(client, location, 5, body[5:])
    assert wrong_offset.status_code == 409 and wrong_offset.json()["error"]["details"]["offset"] == 0
    too_much = patch(client, location, 0, body + b"extra")
    assert too_much.status_code == 413
    bad_sum = patch(
        client,
        location,
        0,
        body[:100],
        **{"Upload-Checksum": "sha256 " + base64.b64encode(b"x" * 32).decode()},
    )
    assert bad_sum.status_code == 460
    assert offset_of(client, location) == 0  # refused bytes are never kept
    assert client.head("/v1/uploads/0123456789abcdef", headers=TUS).status_code == 404


def test_an_upload_in_pieces_with_checksums_becomes_the_same_version_as_a_direct_upload(
    client: TestClient,
) -> None:
    create_model(client)
    body = checkpoint_bytes()
    location = start(
        client, len(body), **{"Upload-Metadata": _metadata(filename="ckpt.pt", metadata='{"acc": 0.9}')}
    )
    pieces = [body[: len(body) // 3], body[len(body) // 3 : 2 * len(body) // 3], body[2 * len(body) // 3 :]]
    offset = 0
    for piece in pieces:
        digest = base64.b64encode(hashlib.sha256(piece).digest()).decode()
        answer = patch(client, location, offset, piece, **{"Upload-Checksum": f"sha256 {digest}"})
        assert answer.status_code == 204, answer.text
        offset += len(piece)
        assert int(answer.headers["Upload-Offset"]) == offset
    assert answer.headers["Weightvault-Upload-State"] == "done"
    outcome = client.get(location).json()
    assert (outcome["state"], outcome["offset"], outcome["length"]) == ("done", len(body), len(body))
    version = outcome["version"]
    assert version["version"] == 1 and version["metadata"] == {"acc": 0.9}
    assert version["source"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert version["source"]["filename"] == "ckpt.pt" and version["training"]["epoch"] == 3
    direct = client.post(
        "/v1/models/demo/versions", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert [a["sha256"] for a in direct.json()["artifacts"]] == [a["sha256"] for a in version["artifacts"]]
    assert patch(client, location, len(body), b"x").status_code == 409  # finished: nothing more to append


def test_resuming_after_a_cut_and_in_a_process_that_never_saw_the_start(
    client: TestClient, data_dir: Path
) -> None:
    create_model(client)
    body = checkpoint_bytes(1)
    location = start(client, len(body))
    upload_id = location.rsplit("/", 1)[1]
    half = len(body) // 2
    assert patch(client, location, 0, body[:half]).status_code == 204
    # Bytes past the acknowledged offset (a PATCH cut off by a crash) are dropped on the next PATCH.
    with uploads_service.part_path(data_dir, upload_id).open("ab") as part:
        part.write(b"garbage from a PATCH that never finished")
    uploads_service._HASHES.forget(upload_id)  # as after a restart: the running hash is rebuilt from disk
    assert offset_of(client, location) == half
    assert patch(client, location, half, body[half:]).status_code == 204
    version = client.get(location).json()["version"]
    assert version["source"]["sha256"] == hashlib.sha256(body).hexdigest()


def _expire(client: TestClient, location: str) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        row = session.get(UploadSession, location.rsplit("/", 1)[1])
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.commit()


def test_termination_expiry_and_limits(small_limits: TestClient, data_dir: Path) -> None:
    client = small_limits
    create_model(client)
    too_large = client.post("/v1/models/demo/uploads", headers={**TUS, "Upload-Length": "5000"})
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "too_large"
    first = start(client, 100)
    assert patch(client, first, 0, b"x" * 10).status_code == 204
    _expire(client, first)  # as if the session's time to live had passed
    gone = client.get(first)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "upload_expired"
    assert client.head(first, headers=TUS).status_code == 404
    assert not any(name.startswith("uploads/") and name.endswith(".part") for name in stored_files(data_dir))

    kept = [start(client, 100), start(client, 100)]
    third = client.post("/v1/models/demo/uploads", headers={**TUS, "Upload-Length": "100"})
    assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_uploads"
    assert client.delete(kept[0], headers=TUS).status_code == 204
    assert client.head(kept[0], headers=TUS).status_code == 404
    start(client, 100)  # a slot was freed


def test_gc_frees_every_expired_upload_and_keeps_the_live_one(client: TestClient, data_dir: Path) -> None:
    create_model(client)
    expired = [start(client, 100), start(client, 100)]
    live = start(client, 100)
    for location in [*expired, live]:
        assert patch(client, location, 0, b"x" * 10).status_code == 204
    for location in expired:
        _expire(client, location)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        assert uploads_service.remove_expired(session=session, data_dir=data_dir) == 2
    parts = {name for name in stored_files(data_dir) if name.startswith("uploads/")}
    assert parts == {f"uploads/{live.rsplit('/', 1)[1]}.part"}
    assert [client.head(location, headers=TUS).status_code for location in expired] == [404, 404]
    assert offset_of(client, live) == 10


HOSTILE = sorted(hostile_files(Path("/nonexistent/marker")))[::3]  # a spread of the direct-upload cases


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_files_through_tus_are_refused_like_direct_uploads_and_leave_nothing(
    client: TestClient, tmp_path: Path, data_dir: Path, name: str
) -> None:
    marker = tmp_path / "pwned"
    body = hostile_files(marker)[name]
    create_model(client)
    direct = client.post(
        "/v1/models/demo/versions", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert direct.status_code == 422
    before = stored_files(data_dir)
    location = start(client, len(body))
    answer = patch(client, location, 0, body)
    assert answer.status_code == 204 and answer.headers["Weightvault-Upload-State"] == "failed"
    outcome = client.get(location).json()
    assert outcome["state"] == "failed" and outcome["version"] is None
    assert outcome["error"]["code"] == direct.json()["error"]["code"]
    assert outcome["error"]["message"] == direct.json()["error"]["message"]
    assert stored_files(data_dir) == before and version_count(client, "demo") == 0
    assert not marker.exists()


@pytest.mark.slow
def test_tuspy_uploads_through_a_real_server(tmp_path: Path) -> None:
    body = checkpoint_bytes(2)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(body)
    with (
        isolated_database(tmp_path) as database_url,
        running_server(
            tmp_path / "data", database_url, tmp_path / "server.log", "--conversion-workers", "0"
        ) as url,
    ):
        httpx.post(
            f"{url}/v1/models", json={"name": "demo", "architecture": "simple-linear"}
        ).raise_for_status()
        client = tus_client.TusClient(f"{url}/v1/models/demo/uploads")
        with path.open("rb") as stream:  # (tuspy leaves a file it opened itself unclosed)
            uploader = client.uploader(
                file_stream=stream,
                chunk_size=700,
                metadata={"filename": "checkpoint.pt"},
                upload_checksum=True,
            )
            uploader.upload()
        outcome = httpx.get(uploader.url).json()
        assert outcome["state"] == "done", outcome
        assert outcome["version"]["source"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert outcome["version"]["source"]["filename"] == "checkpoint.pt"
        # A second tuspy client resumes an upload another started (offset from HEAD).
        second = client.uploader(file_stream=io.BytesIO(body), chunk_size=1000)
        second.upload_chunk()
        resumed = tus_client.TusClient(f"{url}/v1/models/demo/uploads").uploader(
            file_stream=io.BytesIO(body), url=second.url, chunk_size=1000
        )
        assert resumed.offset == 1000
        resumed.upload()
        assert httpx.get(second.url).json()["version"]["version"] == 2
