"""Architectures registered over HTTP convert to ONNX like any other: BERT and GPT-2 (no KV cache)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient

from app.jobs.worker import Worker
from tests.api.test_architectures import register
from tests.conftest import create_model
from tests.fixtures.hf import tiny_config, tiny_model

pytest.importorskip("transformers")


@pytest.mark.parametrize(
    ("class_name", "outputs"),
    [("BertModel", ["last_hidden_state", "pooler_output"]), ("GPT2LMHeadModel", ["logits"])],
)
def test_a_registered_text_model_converts_with_dynamic_batch_and_sequence(
    client: TestClient, tmp_path: Path, class_name: str, outputs: list[str]
) -> None:
    config = tiny_config(class_name)
    model = tiny_model(config)
    register(client, "tiny", config)
    create_model(client, "m", architecture="tiny")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    pushed = client.post(
        "/v1/models/m/versions",
        content=buffer.getvalue(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert pushed.status_code == 201, pushed.text

    job = client.post("/v1/models/m/versions/1/onnx").json()
    assert Worker(client.app.state.runtime).run_once()  # type: ignore[attr-defined]
    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done["error"]
    report = done["report"]
    assert [item["name"] for item in report["outputs"]] == outputs
    assert {tuple(shape) for item in report["checked"] for shape in item.values()} == {
        (1, 8),
        (1, 16),
        (3, 8),
        (3, 16),
    }

    session = onnxruntime.InferenceSession(
        client.get("/v1/models/m/versions/1/artifacts/onnx").content, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    for batch, length in [(1, 8), (3, 16), (2, 5)]:
        ids = torch.randint(0, 99, (batch, length), generator=torch.Generator().manual_seed(batch + length))
        feed = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids),
        }
        got = session.run(None, {name: feed[name].numpy() for name in names})
        with torch.inference_mode():
            want = model(
                **{name: feed[name] for name in names},
                **({"use_cache": False} if "GPT2" in class_name else {}),
            )
        np.testing.assert_allclose(got[0], want[outputs[0]].numpy(), atol=1e-4, rtol=1e-3)
