"""Download semantics: ETag is the sha256, Range, HEAD, If-None-Match, file names."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.checkpoints import save, trained_simple_model
from tests.conftest import create_model, upload


@pytest.fixture
def version(client: TestClient, tmp_path: Path) -> dict[str, object]:
    model, optimizer = trained_simple_model()
    create_model(client)
    ckpt = {
        "epoch": 1,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
    }
    response = upload(client, "demo", save(ckpt, tmp_path / "c.pt"))
    assert response.status_code == 201
    return dict(response.json())


@pytest.mark.parametrize(
    ("kind", "fmt", "filename"),
    [
        ("full", None, "demo-v1-full.pt"),
        ("weights", None, "demo-v1-weights.safetensors"),
        ("weights", "safetensors", "demo-v1-weights.safetensors"),
        ("weights", "pt", "demo-v1-weights.pt"),
    ],
)
def test_body_and_headers_match_the_recorded_artifact(
    client: TestClient, version: dict[str, object], kind: str, fmt: str | None, filename: str
) -> None:
    params = {"format": fmt} if fmt else {}
    response = client.get(f"/v1/models/demo/versions/1/artifacts/{kind}", params=params)
    assert response.status_code == 200
    record = next(
        a
        for a in version["artifacts"]
        if a["kind"] == kind and a["format"] == (fmt or ("pt" if kind == "full" else "safetensors"))
    )  # type: ignore[attr-defined,index]
    assert hashlib.sha256(response.content).hexdigest() == record["sha256"]
    assert response.headers["etag"] == f'"{record["sha256"]}"'
    assert response.headers["x-weightvault-crc32"] == record["crc32"] == f"{zlib.crc32(response.content):08x}"
    assert int(response.headers["content-length"]) == record["size"] == len(response.content)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'


def test_alias_and_latest_download_under_the_version_number(
    client: TestClient, version: dict[str, object]
) -> None:
    assert client.put("/v1/models/demo/aliases/production", json={"version": 1}).status_code == 200
    for ref in ("production", "latest"):
        response = client.get(f"/v1/models/demo/versions/{ref}/artifacts/weights", params={"format": "pt"})
        assert response.status_code == 200
        assert response.headers["content-disposition"] == 'attachment; filename="demo-v1-weights.pt"'


def test_range_head_and_conditional_requests(client: TestClient, version: dict[str, object]) -> None:
    url = "/v1/models/demo/versions/latest/artifacts/full"
    whole = client.get(url)
    etag = whole.headers["etag"]

    partial = client.get(url, headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206
    assert partial.content == whole.content[10:20]
    assert partial.headers["content-range"] == f"bytes 10-19/{len(whole.content)}"

    tail = client.get(url, headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == whole.content[-7:]

    head = client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(whole.content))
    assert head.headers["etag"] == etag

    cached = client.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    stale = client.get(url, headers={"If-None-Match": '"0000"'})
    assert stale.status_code == 200 and stale.content == whole.content

    beyond = client.get(url, headers={"Range": f"bytes={len(whole.content) + 10}-"})
    assert beyond.status_code == 416
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"


def test_unknown_kind_format_and_missing_onnx(client: TestClient, version: dict[str, object]) -> None:
    bad_format = client.get("/v1/models/demo/versions/1/artifacts/weights", params={"format": "h5"})
    assert bad_format.status_code == 422
    assert bad_format.json()["error"]["code"] == "invalid_format"
    onnx = client.get("/v1/models/demo/versions/1/artifacts/onnx")
    assert onnx.status_code == 404
    assert onnx.json()["error"]["code"] == "artifact_not_found"
    unknown = client.get("/v1/models/demo/versions/1/artifacts/zip")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "artifact_not_found"


def test_artifact_list_matches_the_version(client: TestClient, version: dict[str, object]) -> None:
    listed = client.get("/v1/models/demo/versions/1/artifacts").json()
    assert listed["next_cursor"] is None
    assert [(a["kind"], a["format"], a["sha256"]) for a in listed["items"]] == [
        (a["kind"], a["format"], a["sha256"])
        for a in version["artifacts"]  # type: ignore[attr-defined]
    ]


def test_identical_content_is_stored_once(
    client: TestClient, tmp_path: Path, data_dir: Path, version: dict[str, object]
) -> None:
    model, optimizer = trained_simple_model()
    ckpt = {
        "epoch": 1,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
    }
    blobs_before = sorted((data_dir / "blobs").rglob("*"))
    second = upload(client, "demo", save(ckpt, tmp_path / "again.pt"))
    assert second.status_code == 201 and second.json()["version"] == 2
    assert sorted((data_dir / "blobs").rglob("*")) == blobs_before
    assert [a["sha256"] for a in second.json()["artifacts"]] == [a["sha256"] for a in version["artifacts"]]  # type: ignore[attr-defined]


def test_artifact_urls_are_built_from_the_request_and_lead_to_the_file(
    client: TestClient, version: dict[str, object]
) -> None:
    artifacts = version["artifacts"]
    assert isinstance(artifacts, list) and len(artifacts) == 3
    for artifact in artifacts:
        assert artifact["url"].startswith("http://testserver/v1/models/demo/versions/1/artifacts/")
        served = client.get(artifact["url"])
        assert served.status_code == 200 and served.headers["x-weightvault-sha256"] == artifact["sha256"]
        assert f'filename="{artifact["filename"]}"' in served.headers["content-disposition"]
    elsewhere = client.get("/v1/models/demo/versions/1", headers={"Host": "store.example:9000"}).json()
    assert all(a["url"].startswith("http://store.example:9000/v1/") for a in elsewhere["artifacts"])
