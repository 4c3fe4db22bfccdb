"""Uploads against an in-process fake server: streamed from disk with a Content-Length, safe to retry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.checkpoints import trained_simple_model
from weightvault import Client, ConnectionFailed, WeightvaultError
from weightvault import upload as upload_module

URL = "http://weightvault.test"


def _version(number: int, sha256: str) -> dict[str, Any]:
    return {
        "model": "demo",
        "version": number,
        "created_at": "2026-01-01T00:00:00+00:00",
        "metadata": {},
        "source": {"sha256": sha256, "size": 1},
        "training": {"epoch": None},
        "artifacts": [],
    }


def _client(tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    client = Client(URL, cache_dir=tmp_path / "cache", progress=False, connect_retry=0)
    client.transport.http = httpx.Client(base_url=URL, transport=httpx.MockTransport(handler))
    return client


def test_a_file_streams_in_chunks_with_its_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload_module, "UPLOAD_CHUNK_BYTES", 64 * 1024)
    content = os.urandom(300_000)
    path = tmp_path / "big.pt"
    path.write_bytes(content)
    seen: dict[str, Any] = {"chunks": []}
    chunks = upload_module._chunks

    def spy(*args: Any) -> Iterator[bytes]:
        for chunk in chunks(*args):
            seen["chunks"].append(len(chunk))
            yield chunk

    monkeypatch.setattr(upload_module, "_chunks", spy)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(headers=request.headers, params=request.url.params)
        return httpx.Response(201, json=_version(1, hashlib.sha256(request.read()).hexdigest()))

    version = _client(tmp_path, handler).push("demo", path, metadata={"acc": 0.98})
    assert version.source["sha256"] == hashlib.sha256(content).hexdigest()
    assert max(seen["chunks"]) == 64 * 1024 and sum(seen["chunks"]) == len(content)
    assert seen["headers"]["content-length"] == str(len(content))
    assert "transfer-encoding" not in seen["headers"]
    assert seen["headers"]["content-type"] == "application/octet-stream"
    assert seen["headers"]["x-filename"] == "big.pt"
    assert json.loads(seen["params"]["metadata"]) == {"acc": 0.98}


def test_a_retry_after_a_broken_connection_finds_the_version_the_lost_attempt_made(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"checkpoint bytes")
    sha256 = hashlib.sha256(b"checkpoint bytes").hexdigest()
    posts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            request.read()
            posts.append(1)
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if request.url.path == "/v1/models/demo":
            return httpx.Response(200, json={"latest_version": 3})
        number = int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json=_version(number, sha256 if number == 2 else "f" * 64))

    version = _client(tmp_path, handler).push("demo", path)
    assert version.version == 2 and len(posts) == 1  # not sent twice: the first attempt had been stored


def test_a_retry_sends_again_when_the_lost_attempt_left_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"checkpoint bytes")
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            bodies.append(request.read())
            if len(bodies) == 1:
                raise httpx.ReadError("connection reset", request=request)
            return httpx.Response(201, json=_version(1, hashlib.sha256(bodies[-1]).hexdigest()))
        return httpx.Response(200, json={"latest_version": None})

    _client(tmp_path, handler).push("demo", path)
    assert bodies == [b"checkpoint bytes", b"checkpoint bytes"]  # the file was rewound for the retry


def test_a_server_that_never_answers_is_a_connection_failure(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"x")

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    with pytest.raises(ConnectionFailed, match="Cannot connect"):
        _client(tmp_path, handler).push("demo", path)


def test_modules_state_dicts_and_pipes_are_sent_as_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request.read())
        return httpx.Response(201, json=_version(len(received), "0" * 64))

    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp_dir))
    client = _client(tmp_path, handler)
    model, optimizer = trained_simple_model()

    client.push("demo", model, optimizer=optimizer, epoch=3, step=40)
    client.push("demo", model.state_dict())
    read_end, write_end = os.pipe()

    def feed() -> None:
        os.write(write_end, b"piped")
        os.close(write_end)

    threading.Thread(target=feed).start()
    with os.fdopen(read_end, "rb") as pipe:
        client.push("demo", pipe)

    full = torch.load(io.BytesIO(received[0]), weights_only=True)
    assert full["epoch"] == 3 and full["global_step"] == 40
    assert full["optimizer_state_dict"]["state"][0]["momentum_buffer"] is not None
    assert torch.equal(full["model_state_dict"]["linear.weight"], model.linear.weight)
    assert set(torch.load(io.BytesIO(received[1]), weights_only=True)) == {"linear.weight", "linear.bias"}
    assert received[2] == b"piped"
    assert list(temp_dir.glob("weightvault-*")) == []  # the temp checkpoints are gone


def test_training_state_needs_a_module_or_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"x")
    client = _client(tmp_path, lambda request: httpx.Response(500))
    with pytest.raises(TypeError, match="module or state_dict"):
        client.push("demo", path, epoch=3)
    with pytest.raises(TypeError, match="push takes"):
        client.push("demo", 42)
    with pytest.raises(TypeError, match="architecture"):
        client.push("demo", path, create=True)
    with pytest.raises(WeightvaultError):
        client.push("Not A Name", path)
