"""Conversion workers as real processes: supervised by serve, killed mid-job, and racing each other."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.checkpoints import SimpleModel
from tests.fixtures.architectures import Sleepy
from tests.server import running_server, running_worker, wait_for

pytestmark = pytest.mark.slow


def _body(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/jobs/{job_id}").json())


def test_serve_supervises_a_worker_that_converts(tmp_path: Path, data_dir: Path, database_url: str) -> None:
    with (
        running_server(data_dir, database_url, tmp_path / "serve.log", "--conversion-workers", "1") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"})
        assert client.post("/v1/models/demo/versions", content=_body(SimpleModel())).status_code == 201
        job = client.post("/v1/models/demo/versions/1/onnx").json()
        done = wait_for(
            lambda: (j := _job(client, job["id"]))["status"] in ("succeeded", "failed") and j,
            120,
            what="the job",
        )
        assert done["status"] == "succeeded", done  # type: ignore[index]
        assert client.get("/v1/models/demo/versions/1/artifacts/onnx").status_code == 200


def test_a_killed_worker_job_is_taken_over_after_its_lease(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    lease = {"WEIGHTVAULT_JOB_LEASE_SECONDS": "3", "WEIGHTVAULT_WORKER_POLL_SECONDS": "0.2"}
    with (
        running_server(data_dir, database_url, tmp_path / "serve.log", "--conversion-workers", "0") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        client.post("/v1/models", json={"name": "slow", "architecture": "sleepy"})
        assert client.post("/v1/models/slow/versions", content=_body(Sleepy())).status_code == 201
        job = client.post("/v1/models/slow/versions/1/onnx").json()
        with running_worker(
            data_dir, database_url, tmp_path / "a.log", WEIGHTVAULT_TEST_EXPORT_SLEEP="600", **lease
        ) as first:
            running = wait_for(
                lambda: (j := _job(client, job["id"]))["status"] == "running" and j, 120, what="a claim"
            )
            assert running["attempts"] == 1  # type: ignore[index]
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        with running_worker(data_dir, database_url, tmp_path / "b.log", **lease):
            done = wait_for(
                lambda: (j := _job(client, job["id"]))["status"] in ("succeeded", "failed") and j,
                120,
                what="the retry",
            )
        assert done["status"] == "succeeded", done  # type: ignore[index]
        assert done["attempts"] == 2  # type: ignore[index]
    from tests.api.test_operations import cli

    # the killed worker's half-written export is gone with its staging folder; every row has its file
    assert cli(data_dir, database_url, "fsck").returncode == 0


def test_two_workers_never_run_the_same_job(tmp_path: Path, data_dir: Path, database_url: str) -> None:
    with (
        running_server(data_dir, database_url, tmp_path / "serve.log", "--conversion-workers", "0") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"})
        job_ids = []
        for seed in range(6):
            torch.manual_seed(seed)
            assert client.post("/v1/models/demo/versions", content=_body(SimpleModel())).status_code == 201
            job_ids.append(client.post(f"/v1/models/demo/versions/{seed + 1}/onnx").json()["id"])
        with (
            running_worker(data_dir, database_url, tmp_path / "w1.log"),
            running_worker(data_dir, database_url, tmp_path / "w2.log"),
        ):
            wait_for(
                lambda: all(_job(client, j)["status"] in ("succeeded", "failed") for j in job_ids),
                240,
                what="all jobs",
            )
        jobs = [_job(client, j) for j in job_ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 6
        assert [j["attempts"] for j in jobs] == [1] * 6, "a job was claimed twice"
    logs = (tmp_path / "w1.log").read_text() + (tmp_path / "w2.log").read_text()
    for job_id in job_ids:
        assert logs.count(f"running job {job_id}") == 1, logs[-2000:]


def test_a_runaway_export_is_stopped_at_the_time_limit(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    with (
        running_server(data_dir, database_url, tmp_path / "serve.log", "--conversion-workers", "0") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        client.post("/v1/models", json={"name": "slow", "architecture": "sleepy"})
        assert client.post("/v1/models/slow/versions", content=_body(Sleepy())).status_code == 201
        job = client.post("/v1/models/slow/versions/1/onnx").json()
        env = {"WEIGHTVAULT_TEST_EXPORT_SLEEP": "600", "WEIGHTVAULT_JOB_TIME_LIMIT_SECONDS": "3"}
        with running_worker(data_dir, database_url, tmp_path / "w.log", **env) as worker:
            failed = wait_for(
                lambda: (j := _job(client, job["id"]))["status"] == "failed" and j, 120, what="the time limit"
            )
            assert worker.wait(timeout=30) == 75, "the worker process ends after a runaway job"
        assert failed["error"]["code"] == "time_limit"  # type: ignore[index]
        assert "3 s" in failed["error"]["message"]  # type: ignore[index]
    from tests.api.test_operations import cli

    assert cli(data_dir, database_url, "fsck").returncode == 0
