"""Through a real `weightvault serve` process: concurrency and restarts."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from tests.checkpoints import SimpleModel
from tests.server import running_server

pytestmark = pytest.mark.slow


def _state_dict_bytes(seed: int) -> bytes:
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(SimpleModel().state_dict(), buffer)
    return buffer.getvalue()


def test_parallel_uploads_get_distinct_numbers_and_survive_a_restart(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    bodies = {seed: _state_dict_bytes(seed) for seed in range(16)}
    log = tmp_path / "server.log"
    with (
        running_server(data_dir, database_url, log, "--conversion-workers", "0") as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        assert (
            client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"}).status_code
            == 201
        )

        def push(seed: int) -> dict[str, object]:
            with httpx.Client(base_url=url, timeout=120) as own:
                response = own.post(
                    "/v1/models/demo/versions", content=bodies[seed], headers={"X-Filename": f"{seed}.pt"}
                )
            assert response.status_code == 201, response.text
            return dict(response.json())

        with ThreadPoolExecutor(max_workers=16) as pool:
            versions = list(pool.map(push, range(16)))
        assert sorted(int(v["version"]) for v in versions) == list(range(1, 17))  # type: ignore[call-overload]
        by_number = {v["version"]: v for v in versions}
        for version in versions:
            seed = int(str(version["source"]["filename"]).removesuffix(".pt"))  # type: ignore[index]
            assert version["source"]["sha256"] == hashlib.sha256(bodies[seed]).hexdigest()  # type: ignore[index]
        weights_before = {
            n: client.get(f"/v1/models/demo/versions/{n}/artifacts/weights").content for n in by_number
        }

    with (
        running_server(data_dir, database_url, log, "--conversion-workers", "0") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        listed = client.get("/v1/models/demo/versions", params={"limit": 100}).json()["items"]
        assert [v["version"] for v in listed] == list(range(1, 17))
        assert client.get("/v1/models/demo").json()["latest_version"] == 16
        for number, body in weights_before.items():
            response = client.get(f"/v1/models/demo/versions/{number}/artifacts/weights")
            assert response.status_code == 200 and response.content == body
        # numbering continues after the restart
        assert client.post("/v1/models/demo/versions", content=bodies[0]).json()["version"] == 17
    # Only lock files of stopped processes may remain (the next start removes them); no staged bytes.
    assert not [p for p in (data_dir / "tmp").rglob("*") if p.is_file() and p.name != ".lock"], (
        "staging must be empty after shutdown"
    )


def test_upload_limit_is_enforced_before_and_while_reading(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    body = _state_dict_bytes(0)
    limit = len(body) - 1
    env = {"WEIGHTVAULT_MAX_UPLOAD_BYTES": str(limit)}
    with (
        running_server(
            data_dir, database_url, tmp_path / "server.log", "--conversion-workers", "0", **env
        ) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"})
        declared = client.post("/v1/models/demo/versions", content=body)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "too_large"

        def chunked() -> object:
            yield body[:100]
            yield body[100:]

        streamed = client.post("/v1/models/demo/versions", content=chunked())  # no Content-Length
        assert streamed.status_code == 413
        with io.BytesIO(body) as handle:
            multipart = client.post("/v1/models/demo/versions", files={"file": ("w.pt", handle)})
        assert multipart.status_code == 413
        assert client.get("/v1/models/demo").json()["latest_version"] is None
    assert not [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def test_downloads_larger_than_a_send_unit_are_the_composed_bytes(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    """uvicorn sends views of memory-mapped tensor blobs: whole files, ranges across units and tensors."""
    torch.manual_seed(0)
    state = {
        "layers.0.weight": torch.randn(2304, 2304),  # ~20 MiB: more than one 16 MiB unit per tensor
        "layers.0.bias": torch.randn(2304),
        "layers.2.weight": torch.randn(2304, 2304),
        "layers.2.bias": torch.randn(2304),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    config = {"in_features": 2304, "hidden_sizes": [2304], "out_features": 2304}
    with (
        running_server(data_dir, database_url, tmp_path / "server.log", "--conversion-workers", "0") as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        created = client.post("/v1/models", json={"name": "wide", "architecture": "mlp", "config": config})
        assert created.status_code == 201, created.text
        pushed = client.post("/v1/models/wide/versions", content=buffer.getvalue())
        assert pushed.status_code == 201, pushed.text
        for artifact in pushed.json()["artifacts"]:
            if artifact["kind"] not in ("full", "weights"):
                continue
            path = f"/v1/models/wide/versions/1/artifacts/{artifact['kind']}"
            params = {"format": artifact["format"]}
            whole = client.get(path, params=params)
            assert whole.status_code == 200
            assert hashlib.sha256(whole.content).hexdigest() == artifact["sha256"]
            assert len(whole.content) == artifact["size"] > 40 * 2**20
            loaded = (
                torch.load(io.BytesIO(whole.content), weights_only=True)
                if artifact["format"] == "pt"
                else None
            )
            if loaded is not None and artifact["kind"] == "weights":
                assert all(torch.equal(loaded[k], v) for k, v in state.items())
            unit = 16 * 2**20
            for start, end in [
                (unit - 100, unit + 100),
                (5, 3 * unit // 2),
                (2 * unit + 1, artifact["size"] - 1),
            ]:
                part = client.get(path, params=params, headers={"Range": f"bytes={start}-{end}"})
                assert part.status_code == 206 and part.content == whole.content[start : end + 1]
