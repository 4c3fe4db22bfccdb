"""Large pushes go through the resumable endpoint: a dropped connection resumes by itself, and the same
push run again after the client was stopped resumes from the server's offset."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch

from tests.checkpoints import SimpleModel
from tests.client.conftest import Server
from weightvault import Client, ConnectionFailed
from weightvault import resumable as resumable_module
from weightvault.progress import Task, Unit

pytestmark = pytest.mark.slow


class Recorder:
    """A Reporter that remembers where each task started and how far it got."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.starts: list[int] = []
        self.done = 0
        self.stop_after = stop_after

    @contextmanager
    def task(
        self, description: str, *, total: int | None, completed: int = 0, unit: Unit = "bytes"
    ) -> Iterator[Task]:
        self.starts.append(completed)
        self.done = completed
        recorder = self

        class _Task:
            def advance(self, amount: int) -> None:
                recorder.done += amount
                if recorder.stop_after is not None and recorder.done >= recorder.stop_after:
                    raise KeyboardInterrupt  # the user stopped the CLI half-way

            def describe(self, text: str) -> None:
                pass

        yield _Task()


def _big_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "checkpoint.pt"
    torch.save(SimpleModel().state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tutorial's model is small: make it "large" and split it into several PATCHes.
    monkeypatch.setenv("WEIGHTVAULT_RESUMABLE_THRESHOLD", "256")
    monkeypatch.setattr(resumable_module, "PATCH_BYTES", 300)
    monkeypatch.setattr(resumable_module, "UPLOAD_CHUNK_BYTES", 100)
    monkeypatch.setattr(resumable_module.time, "sleep", lambda _seconds: None)


def _create(server: Server, name: str) -> None:
    httpx.post(
        f"{server.url}/v1/models", json={"name": name, "architecture": "simple-linear"}
    ).raise_for_status()


def test_a_large_push_goes_through_the_resumable_endpoint(server: Server, name: str, tmp_path: Path) -> None:
    _create(server, name)
    path = _big_checkpoint(tmp_path)
    with Client(server.url, cache_dir=tmp_path / "cache", progress=False) as client:
        version = client.push(name, path, metadata={"run": "a"})
    assert version.version == 1 and version.raw["metadata"] == {"run": "a"}
    assert version.raw["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert version.raw["source"]["filename"] == "checkpoint.pt"
    assert not list((tmp_path / "cache" / "uploads").glob("*.json"))  # nothing left to resume
    assert "PATCH /v1/uploads/" in server.log.read_text()


def test_a_dropped_connection_resumes_from_the_servers_offset(
    server: Server, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(server, name)
    path = _big_checkpoint(tmp_path)
    real_patch = httpx.Client.patch
    calls = {"n": 0}

    def flaky_patch(self: httpx.Client, url: str, **kwargs: object) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 2:
            # send part of the body, then lose the connection
            body = kwargs["content"]
            next(iter(body))  # type: ignore[call-overload]
            raise httpx.RemoteProtocolError("connection lost")
        return real_patch(self, url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.Client, "patch", flaky_patch)
    recorder = Recorder()
    with Client(server.url, cache_dir=tmp_path / "cache", progress=recorder) as client:
        version = client.push(name, path)
    assert version.raw["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert calls["n"] > 2 and recorder.done == path.stat().st_size


def test_an_upload_the_server_still_holds_is_resumed_once_it_lets_go(
    server: Server, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """423 upload_busy (an earlier PATCH of a stopped client still being received) means wait, ask for
    the offset and go on: not an error for the user."""
    _create(server, name)
    path = _big_checkpoint(tmp_path)
    real_patch = httpx.Client.patch
    calls = {"n": 0}

    def busy_patch(self: httpx.Client, url: str, **kwargs: object) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] in (2, 3):
            body = {"error": {"code": "upload_busy", "message": "Another PATCH of this upload is running."}}
            return httpx.Response(423, json=body, request=httpx.Request("PATCH", url))
        return real_patch(self, url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.Client, "patch", busy_patch)
    recorder = Recorder()
    with Client(server.url, cache_dir=tmp_path / "cache", progress=recorder) as client:
        version = client.push(name, path)
    assert version.raw["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert calls["n"] > 3 and recorder.done == path.stat().st_size


def test_running_the_push_again_after_the_client_stopped_resumes(
    server: Server, name: str, tmp_path: Path
) -> None:
    _create(server, name)
    path = _big_checkpoint(tmp_path)
    size = path.stat().st_size
    with (
        Client(server.url, cache_dir=tmp_path / "cache", progress=Recorder(stop_after=size // 2)) as client,
        pytest.raises(KeyboardInterrupt),
    ):
        client.push(name, path)
    saved = list((tmp_path / "cache" / "uploads").glob("*.json"))
    assert len(saved) == 1
    again = Recorder()
    with Client(server.url, cache_dir=tmp_path / "cache", progress=again) as client:
        version = client.push(name, path)
    assert 0 < again.starts[0] < size  # the bar starts at the resumed offset
    assert version.version == 1
    assert version.raw["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_refused_large_push_raises_the_same_error_as_a_direct_one(
    server: Server, name: str, tmp_path: Path
) -> None:
    _create(server, name)
    path = tmp_path / "junk.pt"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 400)
    with (
        Client(server.url, cache_dir=tmp_path / "cache", progress=False) as client,
        pytest.raises(Exception) as raised,
    ):
        client.push(name, path)
    assert getattr(raised.value, "code", None) == "unreadable_checkpoint"
    assert getattr(raised.value, "status", None) == 422
    assert not isinstance(raised.value, ConnectionFailed)


def test_a_small_push_is_sent_directly(
    server: Server, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEIGHTVAULT_RESUMABLE_THRESHOLD", str(64 * 1024 * 1024))
    _create(server, name)
    with Client(server.url, cache_dir=tmp_path / "cache", progress=False) as client:
        client.push(name, {"linear.weight": torch.zeros(1, 10), "linear.bias": torch.zeros(1)})
    assert not (tmp_path / "cache" / "uploads").exists()
