"""Edges an outside hostile-input test found: cut-off multipart bodies, drip-fed uploads, trickled
headers, requests uvicorn cannot parse, fsck on released blobs, and stored text UTF-8 cannot carry.

Behaviour of the HTTP server itself (header deadline, parser errors, connection handling) is tested
against a real `weightvault serve` over raw sockets; the rest in process.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, update

from app.maintenance.service import fsck
from app.versions.models import Version
from tests.checkpoints import SimpleModel
from tests.conftest import create_model, isolated_database, stored_files, version_count
from tests.server import running_server, server_env, wait_for

HEADER_TIMEOUT = 1.0
DEADLINE_BASE = 1.0
MIN_RATE = 200  # bytes per second


def _state_dict_bytes(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(SimpleModel().state_dict(), buffer)
    return buffer.getvalue()


def _multipart(body: bytes, boundary: str = "edge-boundary", *, closed: bool = True) -> tuple[bytes, str]:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="w.pt"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode() if closed else b""
    return head + body + tail, f"multipart/form-data; boundary={boundary}"


# -- a multipart body without its closing boundary -----------------------------------------------------------


@pytest.mark.parametrize("cut", ["after_file", "mid_file", "inside_boundary"])
def test_multipart_without_closing_boundary_is_refused_and_leaves_nothing(
    client: TestClient, data_dir: Path, cut: str
) -> None:
    create_model(client)
    checkpoint = _state_dict_bytes()
    whole, content_type = _multipart(checkpoint)
    body = {
        "after_file": _multipart(checkpoint, closed=False)[0],
        "mid_file": _multipart(checkpoint[: len(checkpoint) // 2], closed=False)[0],
        "inside_boundary": whole[: -len("-boundary--\r\n")],
    }[cut]
    before = stored_files(data_dir)
    response = client.post("/v1/models/demo/versions", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "unreadable_checkpoint"
    assert "ended without its closing boundary" in error["message"]
    assert error["details"] == {}
    assert stored_files(data_dir) == before
    assert version_count(client, "demo") == 0
    # the same bytes with the boundary closed are accepted: the refusal is about the missing end
    accepted = client.post("/v1/models/demo/versions", content=whole, headers={"Content-Type": content_type})
    assert accepted.status_code == 201, accepted.text


# -- stored strings UTF-8 cannot encode ----------------------------------------------------------------------


def test_lone_surrogate_in_stored_json_is_served_as_valid_json(client: TestClient, database_url: str) -> None:
    create_model(client)
    response = client.post("/v1/models/demo/versions", content=_state_dict_bytes())
    assert response.status_code == 201, response.text
    # The upload path refuses such metadata, so put it in the row the way an old row or a checkpoint's
    # own strings could carry it.
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(Version).values(
                    user_metadata={"note": "bad \ud800 text", "\udfff": 1},
                    training={"epoch": 3, "step": None, "optimizer": "SGD\udc00"},
                )
            )
    finally:
        engine.dispose()
    listed = client.get("/v1/models/demo/versions")
    assert listed.status_code == 200, listed.text
    assert listed.headers["content-type"] == "application/json"
    item = json.loads(listed.content)["items"][0]
    # Values come back exactly; pydantic's JSON mode replaces surrogates in dict *keys* with U+FFFD.
    # the unencodable code point becomes U+FFFD; everything else comes back as stored
    assert item["metadata"]["note"] == "bad \ufffd text" and len(item["metadata"]) == 2
    assert item["training"]["optimizer"] == "SGD\ufffd"
    single = client.get("/v1/models/demo/versions/1")
    assert single.status_code == 200 and json.loads(single.content)["metadata"]["note"] == "bad \ufffd text"
    # ordinary text is still sent as UTF-8, not escaped
    client.post("/v1/models", json={"name": "plain", "architecture": "simple-linear", "description": "größe"})
    assert "größe".encode() in client.get("/v1/models/plain").content


# -- fsck and blobs released by a delete ---------------------------------------------------------------------


def _upload_and_delete(client: TestClient) -> dict[str, Any]:
    create_model(client)
    version = client.post("/v1/models/demo/versions", content=_state_dict_bytes())
    assert version.status_code == 201, version.text
    assert client.delete("/v1/models/demo/versions/1").status_code == 204
    return dict(version.json())


def _blob_bytes(data_dir: Path) -> tuple[int, int]:
    blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    return len(blobs), sum(p.stat().st_size for p in blobs)


def test_fsck_reports_released_blobs_as_information(client: TestClient, data_dir: Path) -> None:
    deleted = _upload_and_delete(client)
    count, size = _blob_bytes(data_dir)
    # Three recipes and the tensor blobs they read, all kept until gc (the release's grace period).
    assert count > len({a["sha256"] for a in deleted["artifacts"]}) > 0
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        report = fsck(session=session, store=runtime.store)
    assert report.clean, report.problems
    assert len(report.unreferenced_blobs) == count and report.unreferenced_bytes == size


@pytest.mark.slow
def test_fsck_command_exits_0_for_blobs_gc_has_not_collected_yet(
    client: TestClient, data_dir: Path, database_url: str
) -> None:
    _upload_and_delete(client)
    count, size = _blob_bytes(data_dir)
    done = subprocess.run(
        [sys.executable, "-m", "app", "fsck"],
        env=server_env(data_dir, database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{count} unreferenced blob(s), {size} bytes; `weightvault gc` removes them" in done.stdout
    assert "problem" not in done.stdout and done.stdout.rstrip().endswith("clean")


# -- through a real server: header deadline, parser errors, upload deadline ----------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One `weightvault serve` with two API processes and small deadlines, shared by this module's
    real-server tests (each uses its own model name)."""
    root = tmp_path_factory.mktemp("edges")
    data_dir = root / "data"
    env = {
        "WEIGHTVAULT_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "WEIGHTVAULT_UPLOAD_DEADLINE_BASE_SECONDS": str(DEADLINE_BASE),
        "WEIGHTVAULT_UPLOAD_MIN_BYTES_PER_SECOND": str(MIN_RATE),
    }
    with (
        isolated_database(root) as database_url,
        running_server(
            data_dir, database_url, root / "serve.log", "--conversion-workers", "0", "--workers", "2", **env
        ) as url,
    ):
        yield url, data_dir


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _read_response(sock: socket.socket, *, until_close: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Read one response; the error answers here also close the connection, which is checked."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    if until_close:
        # A reset is a close too: bytes we sent after the answer make the kernel reset the connection.
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b"", "the connection stayed open"
    return int(status_line.split()[1]), headers, body


def _assert_contract_error(
    status: int, headers: dict[str, str], body: bytes, expected: int, code: str
) -> str:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == code and error["details"] == {}
    assert isinstance(error["message"], str) and len(error["message"]) > 20
    return str(error["message"])


def _staged_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "tmp").rglob("*") if p.is_file() and p.name != ".lock"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("what", "request_bytes", "reason"),
    [
        ("nul-in-header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n", "header value char"),
        ("70kb-url", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "url is too long"),
        ("not-http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "Invalid method"),
    ],
)
def test_requests_uvicorn_cannot_parse_get_the_contract_body(
    server: tuple[str, Path], what: str, request_bytes: bytes, reason: str
) -> None:
    url, _data_dir = server
    # several connections, so both API processes are likely to answer some
    for _ in range(4):
        with socket.create_connection(_address(url), timeout=10) as sock:
            sock.sendall(request_bytes)
            status, headers, body = _read_response(sock)
        message = _assert_contract_error(status, headers, body, 400, "bad_request")
        assert reason in message, message
    assert httpx.get(f"{url}/healthz").status_code == 200


@pytest.mark.slow
def test_trickled_headers_get_408_and_the_connection_closes(server: tuple[str, Path]) -> None:
    url, _data_dir = server
    with socket.create_connection(_address(url), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answered = False
        for _ in range(50):  # a header line every 0.1 s, for up to 5 s
            if select.select([sock], [], [], 0.1)[0]:
                answered = True
                break
            try:
                sock.sendall(b"X-Pad: a\r\n")
            except OSError:
                break  # closed under us: the answer is already waiting
        assert answered or select.select([sock], [], [], 1)[0], "the server kept the connection"
        status, headers, body = _read_response(sock)
        elapsed = time.monotonic() - started
    message = _assert_contract_error(status, headers, body, 408, "request_timeout")
    assert "WEIGHTVAULT_HEADER_TIMEOUT_SECONDS" in message
    assert HEADER_TIMEOUT - 0.2 <= elapsed < HEADER_TIMEOUT + 2


@pytest.mark.slow
def test_a_silent_connection_is_closed_without_an_answer(server: tuple[str, Path]) -> None:
    url, _data_dir = server
    with socket.create_connection(_address(url), timeout=10) as sock:
        started = time.monotonic()
        sock.settimeout(HEADER_TIMEOUT + 3)
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + 2


@pytest.mark.slow
def test_keep_alive_between_requests_is_not_cut_by_the_header_deadline(server: tuple[str, Path]) -> None:
    url, _data_dir = server
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(_address(url), timeout=10) as sock:
        sock.sendall(request)
        assert _read_response(sock, until_close=False)[0] == 200
        # idle longer than the header deadline, shorter than uvicorn's keep-alive timeout (5 s)
        time.sleep(HEADER_TIMEOUT + 0.5)
        sock.sendall(request)
        assert _read_response(sock, until_close=False)[0] == 200


@pytest.mark.slow
def test_an_upload_slower_than_the_minimum_rate_gets_408_and_leaves_nothing(server: tuple[str, Path]) -> None:
    url, data_dir = server
    with httpx.Client(base_url=url, timeout=30) as client:
        create_model(client, "drip")
        # a whole checkpoint at once is well within the deadline
        assert client.post("/v1/models/drip/versions", content=_state_dict_bytes()).status_code == 201
        blobs_before = {p for p in (data_dir / "blobs").rglob("*") if p.is_file()}
        with socket.create_connection(_address(url), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(
                b"POST /v1/models/drip/versions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\nPK\x03\x04"
            )
            answered = False
            for _ in range(60):  # one byte every 0.1 s: never idle, far below the minimum rate
                if select.select([sock], [], [], 0.1)[0]:
                    answered = True
                    break
                try:
                    sock.sendall(b"\0")
                except OSError:
                    break
            assert answered or select.select([sock], [], [], 1)[0], "the drip was never answered"
            # the answer closes the connection though the client is still sending
            status, headers, body = _read_response(sock)
            elapsed = time.monotonic() - started
        assert status == 408, body
        assert headers["connection"] == "close" and headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["code"] == "upload_timeout" and "too slow" in error["message"]
        assert error["details"]["limit"] == "upload_min_bytes_per_second"
        assert DEADLINE_BASE - 0.2 <= elapsed < DEADLINE_BASE + 3
        wait_for(lambda: not _staged_files(data_dir), 10, what="staging to empty")
        assert {p for p in (data_dir / "blobs").rglob("*") if p.is_file()} == blobs_before
        assert [v["version"] for v in client.get("/v1/models/drip/versions").json()["items"]] == [1]


@pytest.mark.slow
def test_a_dripped_resumable_patch_gets_408_keeps_what_arrived_and_resumes(server: tuple[str, Path]) -> None:
    """The tus entry point has the same deadlines; a PATCH cut short by one keeps its bytes for a resume."""
    url, _data_dir = server
    tus = {"Tus-Resumable": "1.0.0"}
    body = _state_dict_bytes(3)
    with httpx.Client(base_url=url, timeout=30) as client:
        create_model(client, "drip-tus")
        created = client.post("/v1/models/drip-tus/uploads", headers={**tus, "Upload-Length": str(len(body))})
        assert created.status_code == 201, created.text
        path = httpx.URL(created.headers["Location"]).path
        with socket.create_connection(_address(url), timeout=10) as sock:
            sock.sendall(
                f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:100]
            )
            sent = 100
            for _ in range(60):  # then one byte every 0.1 s: far below the minimum rate
                if select.select([sock], [], [], 0.1)[0]:
                    break
                with contextlib.suppress(OSError):
                    sock.sendall(body[sent : sent + 1])
                    sent += 1
            status, _headers, answer = _read_response(sock)
        assert status == 408, answer
        assert json.loads(answer)["error"]["code"] == "upload_timeout"
        offset = int(client.head(path, headers=tus).headers["Upload-Offset"])
        assert 100 <= offset <= sent  # what arrived before the deadline was kept
        resumed = client.patch(
            path,
            content=body[offset:],
            headers={**tus, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
        )
        assert resumed.status_code == 204, resumed.text
        outcome = client.get(path).json()
        assert outcome["state"] == "done", outcome
