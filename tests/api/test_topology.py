"""The team topology without Docker: 2 API processes + 2 conversion workers sharing one database
(PostgreSQL in CI) and one data dir, as docker-compose.yml runs them."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from tests.checkpoints import SimpleModel
from tests.server import running_server, server_env, wait_for

pytestmark = pytest.mark.slow


def _body(seed: int) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(SimpleModel().state_dict(), buffer)
    return buffer.getvalue()


def test_two_api_processes_and_two_workers(tmp_path: Path, data_dir: Path, database_url: str) -> None:
    workers_log = (tmp_path / "workers.log").open("wb")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "app", "worker", "--processes", "2"],
        env=server_env(data_dir, database_url, WEIGHTVAULT_LOG_JSON="true"),
        stdout=workers_log,
        stderr=subprocess.STDOUT,
    )
    try:
        with running_server(
            data_dir, database_url, tmp_path / "api.log", "--workers", "2", "--conversion-workers", "0",
            WEIGHTVAULT_LOG_JSON="true",
        ) as url:  # fmt: skip
            client = httpx.Client(base_url=url, timeout=120)
            client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"})

            def push(seed: int) -> int:
                with httpx.Client(base_url=url, timeout=120) as own:
                    response = own.post("/v1/models/demo/versions", content=_body(seed))
                assert response.status_code == 201, response.text
                return int(response.json()["version"])

            with ThreadPoolExecutor(max_workers=6) as pool:
                assert sorted(pool.map(push, range(6))) == [1, 2, 3, 4, 5, 6]
            jobs = [client.post(f"/v1/models/demo/versions/{n}/onnx").json()["id"] for n in range(1, 7)]
            wait_for(
                lambda: all(client.get(f"/v1/jobs/{j}").json()["status"] == "succeeded" for j in jobs),
                300,
                what="conversions by the two workers",
            )
            owners = {client.get(f"/v1/jobs/{j}").json()["attempts"] for j in jobs}
            assert owners == {1}
            text = client.get("/metrics").text
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            accepted = samples[("weightvault_uploads_total", (("outcome", "accepted"),))]
            assert accepted == 6, "uploads counted across both API processes"
            assert samples[("weightvault_jobs", (("status", "succeeded"),))] == 6
            client.close()
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=30)
        workers_log.close()
    worker_lines = (tmp_path / "workers.log").read_text()
    assert worker_lines.count('"message": "worker ') >= 2, "two warm workers"
    assert '"job_id": ' in worker_lines, "worker log lines carry the job id"
    api_lines = (tmp_path / "api.log").read_text()
    assert '"request_id": ' in api_lines
