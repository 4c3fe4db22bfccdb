"""Operations with real processes: tokens from the CLI, fsck and gc, crashes at the worst moments."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.checkpoints import SimpleModel
from tests.fixtures.architectures import Sleepy
from tests.server import running_server, server_env, wait_for

pytestmark = pytest.mark.slow


def cli(data_dir: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=server_env(data_dir, database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _body(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def _staged_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "tmp").rglob("*") if p.is_file() and p.name != ".lock"]


def test_token_from_the_cli_opens_a_secured_server(tmp_path: Path, data_dir: Path, database_url: str) -> None:
    created = cli(data_dir, database_url, "token", "create", "--scope", "write", "--name", "ci")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("wv_") and token not in created.stderr
    listed = cli(data_dir, database_url, "token", "list")
    assert token.split("_")[1] in listed.stdout and token.split("_", 2)[2] not in listed.stdout
    log = tmp_path / "serve.log"
    with running_server(
        data_dir, database_url, log, "--conversion-workers", "0", WEIGHTVAULT_AUTH="on"
    ) as url:
        body = {"name": "demo", "architecture": "simple-linear"}
        assert httpx.post(f"{url}/v1/models", json=body).status_code == 401
        assert (
            httpx.post(
                f"{url}/v1/models", json=body, headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 201
        )
        revoked = cli(data_dir, database_url, "token", "revoke", token.split("_")[1])
        assert revoked.returncode == 0
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_auth_defaults_on_for_a_non_loopback_bind(tmp_path: Path, data_dir: Path, database_url: str) -> None:
    log = tmp_path / "serve.log"
    with running_server(data_dir, database_url, log, "--conversion-workers", "0") as url:
        assert httpx.get(f"{url}/v1/models").status_code == 200
    assert "authentication is off" in log.read_text()
    with running_server(data_dir, database_url, log, "--conversion-workers", "0", "--host", "0.0.0.0") as url:
        assert httpx.get(f"{url}/v1/models").status_code == 401


def test_fsck_finds_each_kind_of_damage_and_gc_collects_orphans(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    with running_server(data_dir, database_url, tmp_path / "serve.log", "--conversion-workers", "0") as url:
        client = httpx.Client(base_url=url, timeout=60)
        client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"})
        torch.manual_seed(0)
        first = client.post("/v1/models/demo/versions", content=_body(SimpleModel())).json()
        torch.manual_seed(1)
        second = client.post("/v1/models/demo/versions", content=_body(SimpleModel())).json()
        torch.manual_seed(1)
        third = client.post(
            "/v1/models/demo/versions", content=_body(SimpleModel())
        ).json()  # same bytes as second
        removed, shared = _blob_names(database_url, first), _blob_names(database_url, second)
        assert removed and not removed & shared
        assert client.delete("/v1/models/demo/versions/3").status_code == 204
        assert client.delete("/v1/models/demo/versions/1").status_code == 204
        client.close()
    clean = cli(data_dir, database_url, "fsck")
    # version 1's files are unreferenced now, but young: fsck lists them (no problem), gc keeps them within
    # the grace period
    assert clean.returncode == 0 and "unreferenced blob" in clean.stdout
    kept = cli(data_dir, database_url, "gc")
    assert kept.returncode == 0 and "removed 0 blob(s)" in kept.stdout
    # Each version's downloads are recipes over tensor blobs: gc frees the blobs of version 1 (its recipes
    # and tensors) and keeps every blob version 2 (and so the identical version 3) reads.
    collected = cli(data_dir, database_url, "gc", "--grace-seconds", "0")
    assert collected.returncode == 0
    assert f"removed {len(removed)} blob(s)" in collected.stdout
    assert {a["sha256"] for a in second["artifacts"]} == {a["sha256"] for a in third["artifacts"]}
    store = data_dir / "blobs" / "sha256"
    assert all((store / sha[:2] / sha).is_file() for sha in shared), "a blob another version uses was removed"
    assert not any((store / sha[:2] / sha).exists() for sha in removed)
    assert cli(data_dir, database_url, "fsck").returncode == 0

    tensor = sorted(_blob_names(database_url, second, tensors_only=True))[0]
    full = _recipe_of(database_url, second, "full")
    blob = store / tensor[:2] / tensor
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    (store / full[:2] / full).unlink()
    orphan = store / "00" / ("0" * 64)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"stray")
    damaged = cli(data_dir, database_url, "fsck")
    assert damaged.returncode == 1
    assert f"corrupt blob: {blob}" in damaged.stdout
    assert f"missing recipe: demo v2 full/pt needs recipe blob {full}" in damaged.stdout
    assert "bad composition: demo v2 weights/safetensors" in damaged.stdout
    assert f"unreferenced blob: {orphan}" in damaged.stdout


def _blob_names(database_url: str, version: dict[str, Any], *, tensors_only: bool = False) -> set[str]:
    """The blobs a version's artifacts use: recipes and the tensor blobs they read."""
    from app.artifacts.models import Artifact, ArtifactTensor
    from app.versions.models import Version

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            artifacts = session.scalars(
                select(Artifact).join(Version).where(Version.number == version["version"])
            ).all()
            names = set(
                session.scalars(
                    select(ArtifactTensor.sha256).where(
                        ArtifactTensor.artifact_id.in_([a.id for a in artifacts])
                    )
                )
            )
            if not tensors_only:
                names |= {a.recipe_sha256 or a.sha256 for a in artifacts}
            return names
    finally:
        engine.dispose()


def _recipe_of(database_url: str, version: dict[str, Any], kind: str) -> str:
    from app.artifacts.models import Artifact
    from app.versions.models import Version

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            recipe = session.scalar(
                select(Artifact.recipe_sha256)
                .join(Version)
                .where(Version.number == version["version"], Artifact.kind == kind)
            )
            assert recipe is not None
            return recipe
    finally:
        engine.dispose()


@pytest.fixture
def slow_server(
    tmp_path: Path, data_dir: Path, database_url: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server whose 'sleepy' architecture takes 60 s per forward pass, for killing mid-ingest."""
    from tests.server import free_port

    port = free_port()
    log = (tmp_path / "slow.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--conversion-workers", "0"],
        env=server_env(data_dir, database_url, WEIGHTVAULT_TEST_FORWARD_SLEEP="60"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(url), 90, what="the server")
    yield url, process
    if process.poll() is None:
        process.kill()
    process.wait()
    log.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _after_restart_nothing_is_half_written(
    tmp_path: Path, data_dir: Path, database_url: str, model: str
) -> None:
    with running_server(data_dir, database_url, tmp_path / "restart.log", "--conversion-workers", "0") as url:
        assert httpx.get(f"{url}/v1/models/{model}/versions").json()["items"] == []
        assert _staged_files(data_dir) == [], "staging of the killed process must be gone after restart"
        assert not list((data_dir / "blobs").rglob("*.tmp"))
    report = cli(data_dir, database_url, "fsck")
    assert report.returncode == 0, report.stdout


def test_kill_during_upload_leaves_nothing(
    tmp_path: Path, data_dir: Path, database_url: str, slow_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = slow_server
    httpx.post(f"{url}/v1/models", json={"name": "demo", "architecture": "simple-linear"})
    sent = threading.Event()

    def trickle() -> Iterator[bytes]:
        yield b"PK\x03\x04" + b"\0" * 65536
        sent.set()
        for _ in range(600):
            time.sleep(0.1)
            yield b"\0" * 1024

    thread = threading.Thread(
        target=lambda: _swallow(
            lambda: httpx.post(f"{url}/v1/models/demo/versions", content=trickle(), timeout=120)
        ),
        daemon=True,
    )
    thread.start()
    assert sent.wait(30)
    wait_for(lambda: _staged_files(data_dir), 30, what="bytes in staging")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    thread.join(timeout=30)
    assert _staged_files(data_dir), "the killed upload left its partial file (until restart)"
    _after_restart_nothing_is_half_written(tmp_path, data_dir, database_url, "demo")


def test_kill_during_ingest_leaves_nothing(
    tmp_path: Path, data_dir: Path, database_url: str, slow_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = slow_server
    httpx.post(f"{url}/v1/models", json={"name": "slow", "architecture": "sleepy"})
    body = _body(Sleepy())
    thread = threading.Thread(
        target=lambda: _swallow(
            lambda: httpx.post(f"{url}/v1/models/slow/versions", content=body, timeout=120)
        ),
        daemon=True,
    )
    thread.start()
    # all bytes arrived and the (sleeping) forward pass is running: the row does not exist yet
    wait_for(
        lambda: any(p.stat().st_size == len(body) for p in _staged_files(data_dir)), 30, what="the upload"
    )
    time.sleep(1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    thread.join(timeout=30)
    _after_restart_nothing_is_half_written(tmp_path, data_dir, database_url, "slow")


def _swallow(call: object) -> None:
    with contextlib.suppress(httpx.HTTPError):
        call()  # type: ignore[operator]


def test_stalled_upload_is_dropped(tmp_path: Path, data_dir: Path, database_url: str) -> None:
    env = {"WEIGHTVAULT_UPLOAD_IDLE_TIMEOUT_SECONDS": "1"}
    with running_server(
        data_dir, database_url, tmp_path / "serve.log", "--conversion-workers", "0", **env
    ) as url:
        httpx.post(f"{url}/v1/models", json={"name": "demo", "architecture": "simple-linear"})

        def stall() -> Iterator[bytes]:
            yield b"PK\x03\x04"
            time.sleep(4)
            yield b"\0"

        try:
            response = httpx.post(f"{url}/v1/models/demo/versions", content=stall(), timeout=30)
            assert response.status_code == 408
            assert response.json()["error"]["code"] == "upload_timeout"
        except httpx.HTTPError:
            pass  # the server may close the connection while we still send: also a drop
        wait_for(lambda: not _staged_files(data_dir), 10, what="staging to empty")
        assert httpx.get(f"{url}/v1/models/demo/versions").json()["items"] == []
