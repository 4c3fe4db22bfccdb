"""A text model through HTTP and a worker: upload a tiny BERT, convert it, run the download at any size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient

from app.jobs.worker import Worker
from app.main import create_app
from app.settings import Settings
from tests.checkpoints import save
from tests.conftest import TEST_ARCHITECTURES, create_model, upload

pytest.importorskip("transformers")

TEXT_ARCHITECTURES = "tests.fixtures.text_architectures"


@pytest.fixture
def text_client(settings: Settings) -> Iterator[TestClient]:
    plugins = settings.model_copy(update={"architecture_modules": [TEST_ARCHITECTURES, TEXT_ARCHITECTURES]})
    with TestClient(create_app(plugins), raise_server_exceptions=False) as client:
        yield client


def test_a_bert_converts_with_named_dynamic_inputs_and_runs_at_any_length(
    text_client: TestClient, tmp_path: Path
) -> None:
    from tests.fixtures.text_architectures import TINY_BERT, VOCAB

    client = text_client
    config = TINY_BERT.effective_config({})
    torch.manual_seed(0)
    module = TINY_BERT.build(config).eval()
    create_model(client, "bert", "tiny-bert")
    uploaded = upload(client, "bert", save(module.state_dict(), tmp_path / "bert.pt"))
    assert uploaded.status_code == 201, uploaded.text

    job = client.post("/v1/models/bert/versions/1/onnx").json()
    worker = Worker(client.app.state.runtime)  # type: ignore[attr-defined]
    assert worker.run_once()
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    report = done["report"]
    tokens = ["input_ids", "attention_mask", "token_type_ids"]
    assert [(item["name"], item["shape"], item["dtype"]) for item in report["inputs"]] == [
        (name, ["batch", "sequence"], "int64") for name in tokens
    ]
    assert [(item["name"], item["shape"]) for item in report["outputs"]] == [
        ("last_hidden_state", ["batch", "sequence", 32]),
        ("pooler_output", ["batch", 32]),
    ]
    sizes = [(1, 8), (1, 16), (3, 8), (3, 16)]
    assert report["checked"] == [{name: [b, n] for name in tokens} for b, n in sizes]

    download = client.get("/v1/models/bert/versions/1/artifacts/onnx")
    assert download.status_code == 200
    session = onnxruntime.InferenceSession(download.content, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(7)
    for batch, length in [*sizes, (2, 5)]:
        inputs = {
            "input_ids": torch.randint(0, VOCAB, (batch, length), generator=generator),
            "attention_mask": torch.ones(batch, length, dtype=torch.long),
            "token_type_ids": torch.zeros(batch, length, dtype=torch.long),
        }
        hidden, pooled = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
        with torch.inference_mode():
            want = module(**inputs)
        np.testing.assert_allclose(hidden, want.last_hidden_state.numpy(), atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(pooled, want.pooler_output.numpy(), atol=1e-4, rtol=1e-3)
