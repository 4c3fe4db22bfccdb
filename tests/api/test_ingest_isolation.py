"""Ingest runs in a disposable child process: a crash, a memory blow-up or an overrun there fails that
upload alone (422 ingest_crashed / 503 ingest_timeout), leaves no file and no row, and the next upload
is served by a fresh child."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ops.logs import ContextFilter
from app.settings import Settings
from tests.api.test_resumable_uploads import patch, start
from tests.checkpoints import save, trained_simple_model
from tests.conftest import create_model, stored_files, upload, version_count

FAULTS = "tests.fixtures.ingest_faults"


def _client(settings: Settings, **changes: object) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update=changes)), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def limited(settings: Settings) -> Iterator[TestClient]:
    """One child, a 1 GiB address-space allowance and a 3 s time limit."""
    yield from _client(
        settings,
        ingest_processes=1,
        ingest_memory_base_bytes=1024**3,
        ingest_memory_per_upload_byte=0.0,
        ingest_time_limit_base_seconds=3.0,
        ingest_time_limit_seconds_per_gib=0.0,
    )


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model, optimizer = trained_simple_model()
    return save(
        {"epoch": 3, "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()},
        tmp_path / "checkpoint.pt",
    )


def _fail_then_succeed(
    client: TestClient, data_dir: Path, checkpoint: Path, hook: str, status: int, code: str
) -> dict[str, object]:
    create_model(client, "demo")
    before = stored_files(data_dir)
    pool = client.app.state.runtime.ingester  # type: ignore[attr-defined]
    pool.fault_hook = f"{FAULTS}:{hook}"
    started = time.monotonic()
    response = client.post(
        "/v1/models/demo/versions",
        content=checkpoint.read_bytes(),
        headers={"Content-Type": "application/octet-stream", "X-Request-ID": f"fault-{hook}"},
    )
    elapsed = time.monotonic() - started
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert stored_files(data_dir) == before
    assert version_count(client, "demo") == 0
    # The server is still here and the pool replaced the child: the next upload is a version.
    pool.fault_hook = None
    again = upload(client, "demo", checkpoint)
    assert again.status_code == 201, again.text
    assert again.json()["version"] == 1
    assert version_count(client, "demo") == 1
    return {"error": error, "elapsed": elapsed}


@pytest.mark.parametrize(
    ("hook", "signal_name"), [("sigkill_after_write", "SIGKILL"), ("segfault_after_write", "SIGSEGV")]
)
def test_a_child_killed_mid_ingest_fails_that_upload_only(
    limited: TestClient,
    data_dir: Path,
    checkpoint: Path,
    hook: str,
    signal_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level(logging.ERROR, logger="weightvault.ingest"):
        outcome = _fail_then_succeed(limited, data_dir, checkpoint, hook, 422, "ingest_crashed")
    error = outcome["error"]
    assert isinstance(error, dict)
    assert error["details"] == {"signal": signal_name}
    assert signal_name in error["message"]
    died = [r for r in caplog.records if "died" in r.getMessage()]
    assert died and signal_name in died[0].getMessage()
    # Logged with the request's id, so an operator can find which upload it was.
    assert getattr(died[0], "request_id", None) == f"fault-{hook}"


def test_a_child_over_its_memory_limit_fails_that_upload_only(
    limited: TestClient, data_dir: Path, checkpoint: Path
) -> None:
    outcome = _fail_then_succeed(
        limited, data_dir, checkpoint, "allocate_beyond_limit", 422, "ingest_crashed"
    )
    error = outcome["error"]
    assert isinstance(error, dict)
    assert error["details"] == {"reason": "memory_limit"}


def test_a_child_over_its_time_limit_is_killed(limited: TestClient, data_dir: Path, checkpoint: Path) -> None:
    outcome = _fail_then_succeed(limited, data_dir, checkpoint, "hang", 503, "ingest_timeout")
    error = outcome["error"]
    assert isinstance(error, dict)
    assert error["details"] == {"time_limit_seconds": 3.0}
    assert isinstance(outcome["elapsed"], float) and outcome["elapsed"] < 30


def test_a_spinning_child_is_killed_too(limited: TestClient, data_dir: Path, checkpoint: Path) -> None:
    _fail_then_succeed(limited, data_dir, checkpoint, "spin", 503, "ingest_timeout")


def test_a_resumable_upload_whose_child_crashes_reports_it(
    limited: TestClient, data_dir: Path, checkpoint: Path
) -> None:
    create_model(limited, "demo")
    before = stored_files(data_dir)
    limited.app.state.runtime.ingester.fault_hook = f"{FAULTS}:segfault_after_write"  # type: ignore[attr-defined]
    body = checkpoint.read_bytes()
    location = start(limited, len(body))
    answer = patch(limited, location, 0, body)
    assert answer.status_code == 204 and answer.headers["Weightvault-Upload-State"] == "failed"
    outcome = limited.get(location).json()
    assert outcome["state"] == "failed" and outcome["version"] is None
    assert outcome["error"]["code"] == "ingest_crashed"
    assert stored_files(data_dir) == before and version_count(limited, "demo") == 0


def test_the_fault_hook_is_not_a_setting(settings: Settings) -> None:
    # Only code in the server's own process (tests) can set it: no environment variable reaches it.
    assert not any("fault" in name for name in Settings.model_fields)
