"""After a write has answered, no API process serves what it changed (a deleted version, a moved or
removed alias, edited metadata), nor an old page.

Two real API processes (``serve --workers 2``) share one database; every read is repeated so that each
process answers some of them (the kernel spreads new connections over the processes' accepts). Each
process may reuse a read's stamp for the read lease; the lease is set to half a second here, so that every
read made just before a write is still leased when the write answers: only the write's answer waiting
out the lease keeps those reads from being served stale.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import torch

from tests.checkpoints import SimpleModel
from tests.server import running_server

pytestmark = pytest.mark.slow

READS_PER_CHECK = 12  # fresh connections each: both processes answer some


def _body(seed: int) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(SimpleModel().state_dict(), buffer)
    return buffer.getvalue()


def _every(url: str, path: str) -> list[httpx.Response]:
    """``path`` fetched READS_PER_CHECK times, each on a new connection."""
    answers = []
    for _ in range(READS_PER_CHECK):
        with httpx.Client(base_url=url, timeout=30) as fresh:
            answers.append(fresh.get(path))
    return answers


def test_no_api_process_serves_a_stale_read_after_a_write(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    with running_server(
        data_dir,
        database_url,
        tmp_path / "api.log",
        "--workers",
        "2",
        "--conversion-workers",
        "0",
        WEIGHTVAULT_READ_LEASE_MS="500",
    ) as url:
        client = httpx.Client(base_url=url, timeout=120)
        assert client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"}).is_success
        for seed in range(3):
            assert client.post("/v1/models/demo/versions", content=_body(seed)).status_code == 201
        assert client.put("/v1/models/demo/aliases/prod", json={"version": 2}).is_success
        # Every process has read (and could have kept) the current state before each write.
        for path in ("/v1/models/demo", "/v1/models/demo/versions/prod", "/v1/models/demo/versions/3"):
            assert all(r.status_code == 200 for r in _every(url, path))

        assert client.put("/v1/models/demo/aliases/prod", json={"version": 1}).is_success
        assert {r.json()["version"] for r in _every(url, "/v1/models/demo/versions/prod")} == {1}
        assert {r.json()["aliases"]["prod"] for r in _every(url, "/v1/models/demo")} == {1}

        assert client.delete("/v1/models/demo/versions/3").status_code == 204
        assert {r.status_code for r in _every(url, "/v1/models/demo/versions/3")} == {404}
        assert {r.json()["version"] for r in _every(url, "/v1/models/demo/versions/latest")} == {2}
        assert {r.json()["latest_version"] for r in _every(url, "/v1/models/demo")} == {2}
        pages = _every(url, "/v1/models/demo/versions?order=desc")
        assert {tuple(v["version"] for v in r.json()["items"]) for r in pages} == {(2, 1)}

        assert client.patch("/v1/models/demo/versions/1", json={"metadata": {"acc": 0.5}}).is_success
        assert {r.json()["metadata"]["acc"] for r in _every(url, "/v1/models/demo/versions/prod")} == {0.5}

        assert client.delete("/v1/models/demo/aliases/prod").status_code == 204
        assert {r.status_code for r in _every(url, "/v1/models/demo/versions/prod")} == {404}
        assert {tuple(r.json()["aliases"]) for r in _every(url, "/v1/models/demo")} == {()}
        client.close()
    # One access line per request, ours (with its request id): not uvicorn's too, in either process.
    log = (tmp_path / "api.log").read_text()
    assert "weightvault.access" in log and "uvicorn.access" not in log
