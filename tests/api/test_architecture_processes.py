"""A registration made through one server process is seen at once by another, by its ingest child
processes (which have no database) and by a conversion worker; so is a delete."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.fixtures.hf import state_dict_bytes, tiny_config, tiny_model
from tests.server import running_server, wait_for

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/jobs/{job_id}").json())


def test_a_registration_is_seen_by_another_server_its_ingest_and_its_worker(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    config = tiny_config("BertModel")
    model = tiny_model(config)
    one = {"WEIGHTVAULT_API_WORKERS": "1", "WEIGHTVAULT_ARCHITECTURE_LIBRARIES": "transformers,torch"}
    with (
        running_server(
            data_dir, database_url, tmp_path / "a.log", "--conversion-workers", "0", **one
        ) as a_url,
        running_server(
            data_dir, database_url, tmp_path / "b.log", "--conversion-workers", "1", **one
        ) as b_url,
        httpx.Client(base_url=a_url, timeout=120) as a,
        httpx.Client(base_url=b_url, timeout=120) as b,
    ):
        assert b.get("/v1/architectures/tiny-bert").status_code == 404
        registered = a.post(
            "/v1/architectures", json={"name": "tiny-bert", "library": "transformers", "config": config}
        )
        assert registered.status_code == 201, registered.text
        assert b.get("/v1/architectures/tiny-bert").json() == registered.json()

        assert b.post("/v1/models", json={"name": "bert", "architecture": "tiny-bert"}).status_code == 201
        pushed = b.post("/v1/models/bert/versions", content=state_dict_bytes(model))
        assert pushed.status_code == 201, pushed.text
        weights = b.get("/v1/models/bert/versions/1/artifacts/weights", params={"format": "pt"})
        fresh = tiny_model(config)
        fresh.load_state_dict(torch.load(io.BytesIO(weights.content), weights_only=True))
        ids = torch.randint(0, 99, (2, 8))
        with torch.inference_mode():
            assert torch.equal(fresh(ids).last_hidden_state, model(ids).last_hidden_state)

        # the worker (started with server b) finds registered architectures in the database too
        linear = {
            "name": "lin",
            "library": "torch",
            "factory": "nn.Linear",
            "kwargs": {"in_features": 4, "out_features": 2},
            "inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
        }
        assert a.post("/v1/architectures", json=linear).status_code == 201
        assert b.post("/v1/models", json={"name": "lin", "architecture": "lin"}).status_code == 201
        assert (
            b.post("/v1/models/lin/versions", content=state_dict_bytes(torch.nn.Linear(4, 2))).status_code
            == 201
        )
        for name, must_succeed in (("lin", True), ("bert", False)):
            job = a.post(f"/v1/models/{name}/versions/1/onnx").json()
            done: Any = wait_for(
                lambda job=job: (j := _job(a, job["id"]))["status"] in ("succeeded", "failed") and j,
                240,
                what="the job",
            )
            # (text models' ONNX export is its own piece of work; here the worker must know the architecture)
            assert (done["error"] or {}).get("code") != "architecture_not_found", done["error"]
            assert done["status"] == "succeeded" or not must_succeed, done["error"]

        in_use = a.delete("/v1/architectures/tiny-bert")
        assert in_use.status_code == 409 and in_use.json()["error"]["details"]["models"] == ["bert"]
        assert b.delete("/v1/models/bert").status_code == 204
        assert a.delete("/v1/architectures/tiny-bert").status_code == 204
        assert b.get("/v1/architectures/tiny-bert").status_code == 404
        created = b.post("/v1/models", json={"name": "again", "architecture": "tiny-bert"})
        assert created.json()["error"]["code"] == "architecture_not_found"
