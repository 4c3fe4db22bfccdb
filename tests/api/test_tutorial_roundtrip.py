"""The classic tutorial's three saves go in, come out, and resume training exactly."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from fastapi.testclient import TestClient
from safetensors.torch import load as load_safetensors_bytes

from tests.checkpoints import SimpleModel, save, trained_simple_model, tutorial_whole_module
from tests.conftest import create_model, upload


def _download(client: TestClient, path: str) -> bytes:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return response.content


def test_full_checkpoint_resumes_training_exactly(client: TestClient, tmp_path: Path) -> None:
    model, optimizer = trained_simple_model()
    create_model(client)
    ckpt = save(
        {
            "epoch": 10,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "loss": 0.25,
        },
        tmp_path / "checkpoint.pt",
    )
    response = upload(client, "demo", ckpt)
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["version"] == 1
    assert version["source"]["layout"] == "training_checkpoint"
    assert version["source"]["format"] == "torch_zip"
    assert version["source"]["filename"] == "checkpoint.pt"
    assert version["source"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert version["training"] == {"epoch": 10, "step": None, "optimizer": "SGD"}
    assert version["validation"]["status"] == "passed" and version["validation"]["strict"] is True
    kinds = {(a["kind"], a["format"]) for a in version["artifacts"]}
    assert kinds == {("full", "pt"), ("weights", "safetensors"), ("weights", "pt")}
    assert all(a["validation"]["status"] == "passed" for a in version["artifacts"])

    full = torch.load(
        io.BytesIO(_download(client, "/v1/models/demo/versions/1/artifacts/full")), weights_only=True
    )
    assert full["epoch"] == 10 and full["loss"] == 0.25
    resumed = SimpleModel()
    resumed.load_state_dict(full["model_state_dict"])
    resumed_opt = torch.optim.SGD(resumed.parameters(), lr=0.01, momentum=0.9)
    resumed_opt.load_state_dict(full["optimizer_state_dict"])

    x = torch.randn(5, 10)
    assert torch.equal(resumed(x), model(x))
    for net, opt in ((model, optimizer), (resumed, resumed_opt)):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    for original, restored in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(original, restored)


def test_bare_state_dict_round_trips_in_both_weight_formats(client: TestClient, tmp_path: Path) -> None:
    model, _ = trained_simple_model(seed=1)
    create_model(client)
    response = upload(client, "demo", save(model.state_dict(), tmp_path / "weights.pt"), multipart=True)
    assert response.status_code == 201, response.text
    assert response.json()["source"]["layout"] == "state_dict"
    x = torch.randn(4, 10)

    st_bytes = _download(client, "/v1/models/demo/versions/1/artifacts/weights")
    from_safetensors = SimpleModel()
    from_safetensors.load_state_dict(load_safetensors_bytes(st_bytes))
    pt_bytes = _download(client, "/v1/models/demo/versions/1/artifacts/weights?format=pt")
    from_pt = SimpleModel()
    from_pt.load_state_dict(torch.load(io.BytesIO(pt_bytes), weights_only=True))
    assert torch.equal(from_safetensors(x), model(x))
    assert torch.equal(from_pt(x), model(x))
    full = torch.load(
        io.BytesIO(_download(client, "/v1/models/demo/versions/1/artifacts/full")), weights_only=True
    )
    assert list(full) == ["model_state_dict"]


def test_whole_module_pickle_from_a_script_is_read_without_its_code(
    client: TestClient, tmp_path: Path
) -> None:
    path, expected = tutorial_whole_module(tmp_path / "model.pt")
    create_model(client)
    response = upload(client, "demo", path)
    assert response.status_code == 201, response.text
    assert response.json()["source"]["layout"] == "module"
    restored = SimpleModel()
    restored.load_state_dict(
        torch.load(
            io.BytesIO(_download(client, "/v1/models/demo/versions/1/artifacts/weights?format=pt")),
            weights_only=True,
        )
    )
    assert torch.equal(restored(torch.ones(3, 10)), expected)


def test_whole_module_of_an_unregistered_class_is_refused(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    # tests.checkpoints.SimpleModel has the right layout but is not the registered class.
    response = upload(client, "demo", save(SimpleModel(), tmp_path / "model.pt"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unsafe_checkpoint"
    assert "tests.checkpoints.SimpleModel" in error["message"]
    assert "docs/architectures.md" in error["message"]
    assert client.get("/v1/models/demo").json()["latest_version"] is None
