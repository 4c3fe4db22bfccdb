"""Hostile files: refused with a 4xx and a reason, nothing of them runs, nothing of them stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import create_model, stored_files, version_count
from tests.hostile import hostile_files

EXPECTED_CODES = {
    "torchscript": "unsafe_checkpoint",
    "duplicate-data-pkl": "unreadable_checkpoint",
    "zip-slip": "unreadable_checkpoint",
    "absolute-member": "unreadable_checkpoint",
    "deflate-bomb": "unreadable_checkpoint",
    "random-bytes": "unreadable_checkpoint",
    "truncated": "unreadable_checkpoint",
    "text": "unreadable_checkpoint",
    "bad-crc": "unreadable_checkpoint",
    "lying-size": "unreadable_checkpoint",
    "st-header-over-limit": ("unreadable_checkpoint", "limit_exceeded"),
    "protocol-0-pickle": "unsafe_checkpoint",
}
NAMES = sorted(hostile_files(Path("/nonexistent/marker")))


@pytest.mark.parametrize("name", NAMES)
def test_hostile_file_is_refused_and_leaves_nothing(
    client: TestClient, tmp_path: Path, data_dir: Path, name: str
) -> None:
    marker = tmp_path / "pwned"
    body = hostile_files(marker)[name]
    create_model(client)
    before = stored_files(data_dir)
    response = client.post(
        "/v1/models/demo/versions",
        content=body,
        headers={"Content-Type": "application/octet-stream", "X-Filename": "model.pt"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    expected = EXPECTED_CODES.get(
        name, "unreadable_checkpoint" if name.startswith("st-") else "unsafe_checkpoint"
    )
    assert error["code"] in (expected if isinstance(expected, tuple) else (expected,)), error
    assert len(error["message"]) > 20
    if error["code"] == "unsafe_checkpoint" and name != "torchscript":
        assert error["details"]["globals"], "the refused global must be named"
        assert any(g.split(".")[-1] in error["message"] for g in error["details"]["globals"])
    assert not marker.exists(), "code from the upload ran"
    assert stored_files(data_dir) == before
    assert version_count(client, "demo") == 0


def test_gadget_names_the_refused_global(client: TestClient, tmp_path: Path) -> None:
    body = hostile_files(tmp_path / "pwned")["zip-os.system"]
    create_model(client)
    response = client.post("/v1/models/demo/versions", content=body)
    assert response.status_code == 422
    assert "system" in response.json()["error"]["message"]


def test_empty_body_is_unreadable(client: TestClient) -> None:
    create_model(client)
    response = client.post("/v1/models/demo/versions", content=b"")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unreadable_checkpoint"
    assert "empty" in response.json()["error"]["message"]


HOSTILE_NAMES = {
    "../../../../etc/passwd": "passwd",
    "/absolute/path/model.pt": "model.pt",
    "..\\..\\windows\\model.pt": "model.pt",
    "nul\x00byte.pt": "nulbyte.pt",
    "crlf\r\nX-Injected: yes.pt": "",
    "x" * 4096: "x" * 255,
}


@pytest.mark.parametrize("raw", sorted(HOSTILE_NAMES))
def test_hostile_file_names_are_metadata_only(
    client: TestClient, tmp_path: Path, data_dir: Path, raw: str
) -> None:
    from tests.checkpoints import SimpleModel, save

    create_model(client)
    path = save(SimpleModel().state_dict(), tmp_path / "w.pt")
    # Built by hand: httpx would escape the name, and the point is what the server does with raw bytes.
    boundary = "hostile-boundary"
    disposition = b'Content-Disposition: form-data; name="file"; filename="' + raw.encode() + b'"'
    body = b"--" + boundary.encode() + b"\r\n" + disposition + b"\r\n\r\n" + path.read_bytes()
    body += b"\r\n--" + boundary.encode() + b"--\r\n"
    response = client.post(
        "/v1/models/demo/versions",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 201, response.text
    stored = response.json()["source"]["filename"]
    assert not any(ch in stored for ch in "\r\n\x00/\\") and len(stored) <= 255
    if "\r\n" not in raw:  # a raw line break ends the part header; what is left of the name is harmless
        assert stored == HOSTILE_NAMES[raw]
    download = client.get("/v1/models/demo/versions/1/artifacts/weights")
    assert download.headers["content-disposition"] == 'attachment; filename="demo-v1-weights.safetensors"'
    assert "x-injected" not in download.headers
    outside = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and data_dir not in p.parents and p != path and not p.name.startswith("weightvault.db")
    ]
    assert outside == [], "nothing may be written outside the data dir"
    assert all(p.name != HOSTILE_NAMES[raw] for p in data_dir.rglob("*"))
