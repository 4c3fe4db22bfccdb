"""Workers that cannot start say so and exit non-zero; restarts are counted in /metrics; a job never
waits forever (one still queued past WEIGHTVAULT_JOB_QUEUE_TIMEOUT_SECONDS fails as `no_worker`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.jobs import heartbeat
from app.main import create_app
from app.settings import Settings
from tests.checkpoints import SimpleModel, save
from tests.conftest import create_model, upload
from tests.server import server_env, wait_for


@pytest.fixture
def impatient(settings: Settings) -> Iterator[TestClient]:
    changed = settings.model_copy(update={"job_queue_timeout_seconds": 1.0})
    with TestClient(create_app(changed), raise_server_exceptions=False) as client:
        yield client


def test_a_job_queued_past_its_deadline_fails_as_no_worker(impatient: TestClient, tmp_path: Path) -> None:
    create_model(impatient, "demo")
    assert upload(impatient, "demo", save(SimpleModel().state_dict(), tmp_path / "m.pt")).status_code == 201
    submitted = impatient.post("/v1/models/demo/versions/1/onnx", json={})
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    assert impatient.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    time.sleep(1.5)
    job = impatient.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "no_worker"
    assert "WEIGHTVAULT_JOB_QUEUE_TIMEOUT_SECONDS" in job["error"]["message"]
    listed = impatient.get("/v1/jobs", params={"status": "failed"}).json()["items"]
    assert [j["id"] for j in listed] == [job_id]
    # Asking again queues a fresh job instead of returning the failed one.
    again = impatient.post("/v1/models/demo/versions/1/onnx", json={})
    assert again.status_code == 202 and again.json()["id"] != job_id
    assert again.json()["status"] == "queued"


def test_a_listing_fails_overdue_jobs_too(impatient: TestClient, tmp_path: Path) -> None:
    create_model(impatient, "demo")
    assert upload(impatient, "demo", save(SimpleModel().state_dict(), tmp_path / "m.pt")).status_code == 201
    job_id = impatient.post("/v1/models/demo/versions/1/onnx", json={}).json()["id"]
    time.sleep(1.5)
    listed = impatient.get("/v1/jobs").json()["items"]
    assert [(j["id"], j["status"], j["error"]["code"]) for j in listed] == [(job_id, "failed", "no_worker")]


def _worker(data_dir: Path, database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "worker", *args],
        env=server_env(data_dir, database_url, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("mode", [("--single",), ()])
def test_a_worker_without_its_database_exits_non_zero_saying_why(
    tmp_path: Path, mode: tuple[str, ...]
) -> None:
    done = _worker(
        tmp_path / "data",
        "postgresql+psycopg://nobody:secret@127.0.0.1:9/none",
        *mode,
        WEIGHTVAULT_WORKER_START_TIMEOUT_SECONDS="2",
    )
    assert done.returncode == 1
    assert "weightvault worker: cannot start: cannot reach the database" in done.stderr
    assert "WEIGHTVAULT_DATABASE_URL" in done.stderr
    assert "secret" not in done.stderr  # the password is not printed
    assert "Traceback" not in done.stderr


def test_a_worker_against_an_unmigrated_database_says_to_migrate(tmp_path: Path) -> None:
    done = _worker(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'empty.db'}",
        "--single",
        WEIGHTVAULT_WORKER_START_TIMEOUT_SECONDS="0",
    )
    assert done.returncode == 1
    assert "has no jobs table" in done.stderr and "weightvault db upgrade" in done.stderr


def test_a_worker_waits_for_a_database_that_is_being_migrated(tmp_path: Path) -> None:
    # A compose stack starts workers and the API together; the API migrates. The worker waits for that.
    from app.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'late.db'}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "app", "worker", "--once"],
        env=server_env(tmp_path / "data", url, WEIGHTVAULT_WORKER_START_TIMEOUT_SECONDS="60"),
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    assert worker.poll() is None
    upgrade(url)
    _out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert "waiting up to 60 s" in err and "has no jobs table" in err


def test_restarts_of_workers_that_exit_are_counted_in_metrics(
    client: TestClient, tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    # Workers that exit at once (a broken install as they see it); the supervisor restarts them.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        'if b"--single" in open("/proc/self/cmdline", "rb").read().split(b"\\0"):\n'
        '    raise SystemExit("worker cannot start: simulated broken install")\n'
    )
    env = server_env(data_dir, database_url)
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "app", "worker", "--processes", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: heartbeat.restart_total(data_dir) >= 2, timeout=60, what="two restarts")
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=30)
    lines = [
        line for line in client.get("/metrics").text.splitlines() if line.startswith("weightvault_conversion")
    ]
    total = next(line for line in lines if line.startswith("weightvault_conversion_worker_restarts_total"))
    assert float(total.split()[-1]) >= 2
