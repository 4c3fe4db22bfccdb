"""Real-world checkpoint layouts and dtypes are recognised, normalised and stored."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_model, save_file, save_model

from app.architectures.builtin import TransformerEncoderConfig, TransformerEncoderLM
from tests.checkpoints import SimpleModel, save, trained_simple_model
from tests.conftest import create_model, upload


def _weights(
    client: TestClient, model: str = "demo", ref: str = "latest", fmt: str = "pt"
) -> dict[str, torch.Tensor]:
    response = client.get(f"/v1/models/{model}/versions/{ref}/artifacts/weights", params={"format": fmt})
    assert response.status_code == 200, response.text
    if fmt == "safetensors":
        return load_safetensors_bytes(response.content)
    return dict(torch.load(io.BytesIO(response.content), weights_only=True))


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


def _lightning_checkpoint(model: SimpleModel, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "epoch": 3,
        "global_step": 420,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": _prefixed(model.state_dict(), "model."),
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [{"step_size": 10, "gamma": 0.1, "last_epoch": 3}],
        "hyper_parameters": {"lr": 0.01},
    }


@pytest.mark.parametrize(
    ("name", "build", "layout"),
    [
        ("ddp", lambda m, o: _prefixed(m.state_dict(), "module."), "state_dict"),
        ("compiled", lambda m, o: torch.compile(m).state_dict(), "state_dict"),
        ("ddp-compiled", lambda m, o: _prefixed(torch.compile(m).state_dict(), "module."), "state_dict"),
        ("state_dict-key", lambda m, o: {"state_dict": m.state_dict(), "epoch": 2}, "training_checkpoint"),
        (
            "model-key",
            lambda m, o: {"model": m.state_dict(), "optimizer": o.state_dict(), "epoch": 4},
            "training_checkpoint",
        ),
        ("lightning", _lightning_checkpoint, "lightning"),
    ],
)
def test_wrapped_layouts_are_normalised(
    client: TestClient, tmp_path: Path, name: str, build: Any, layout: str
) -> None:
    model, optimizer = trained_simple_model()
    create_model(client)
    response = upload(client, "demo", save(build(model, optimizer), tmp_path / f"{name}.pt"))
    assert response.status_code == 201, response.text
    assert response.json()["source"]["layout"] == layout
    weights = _weights(client)
    assert list(weights) == ["linear.weight", "linear.bias"]
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_lightning_checkpoint_becomes_a_classic_full_checkpoint(client: TestClient, tmp_path: Path) -> None:
    model, optimizer = trained_simple_model()
    create_model(client)
    response = upload(client, "demo", save(_lightning_checkpoint(model, optimizer), tmp_path / "last.ckpt"))
    assert response.status_code == 201, response.text
    assert response.json()["training"] == {"epoch": 3, "step": 420, "optimizer": "SGD"}
    full = torch.load(
        io.BytesIO(client.get("/v1/models/demo/versions/1/artifacts/full").content), weights_only=True
    )
    assert list(full)[:3] == ["model_state_dict", "optimizer_state_dict", "epoch"]
    assert list(full["model_state_dict"]) == ["linear.weight", "linear.bias"]
    assert full["optimizer_state_dict"]["param_groups"] == optimizer.state_dict()["param_groups"]
    assert full["lr_schedulers"][0]["gamma"] == 0.1 and full["global_step"] == 420
    assert "state_dict" not in full and "optimizer_states" not in full


def test_legacy_non_zip_format_is_accepted(client: TestClient, tmp_path: Path) -> None:
    model, optimizer = trained_simple_model()
    create_model(client)
    ckpt = {
        "epoch": 1,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
    }
    response = upload(client, "demo", save(ckpt, tmp_path / "old.pt", legacy=True))
    assert response.status_code == 201, response.text
    assert response.json()["source"]["format"] == "torch_legacy"
    assert torch.equal(_weights(client)["linear.weight"], model.linear.weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_keep_their_dtype(
    client: TestClient, tmp_path: Path, dtype: torch.dtype
) -> None:
    model = SimpleModel().to(dtype)
    create_model(client)
    response = upload(client, "demo", save(model.state_dict(), tmp_path / "half.pt"))
    assert response.status_code == 201, response.text
    assert response.json()["validation"]["forward"]["outputs"][0]["dtype"] == str(dtype).removeprefix(
        "torch."
    )
    for fmt in ("pt", "safetensors"):
        weights = _weights(client, fmt=fmt)
        assert weights["linear.weight"].dtype == dtype
        assert torch.equal(weights["linear.weight"], model.linear.weight)


def test_safetensors_upload(client: TestClient, tmp_path: Path) -> None:
    model, _ = trained_simple_model()
    create_model(client)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    response = upload(client, "demo", path)
    assert response.status_code == 201, response.text
    assert response.json()["source"]["format"] == "safetensors"
    assert torch.equal(_weights(client)["linear.bias"], model.linear.bias)


def _tied_model() -> TransformerEncoderLM:
    torch.manual_seed(3)
    return TransformerEncoderLM(
        TransformerEncoderConfig(
            vocab_size=50, d_model=16, nhead=2, num_layers=1, dim_feedforward=32, max_len=32
        )
    )


TIED_CONFIG = {
    "vocab_size": 50,
    "d_model": 16,
    "nhead": 2,
    "num_layers": 1,
    "dim_feedforward": 32,
    "max_len": 32,
}


@pytest.mark.parametrize("source", ["torch", "safetensors-save_model"])
def test_tied_weights_load_back_tied(client: TestClient, tmp_path: Path, source: str) -> None:
    model = _tied_model().eval()
    create_model(client, "lm", "transformer-encoder", config=TIED_CONFIG)
    path = tmp_path / "lm.bin"
    if source == "torch":
        torch.save(model.state_dict(), path)
    else:
        save_model(model, str(path))  # drops the duplicate name lm_head.weight
    response = upload(client, "lm", path)
    assert response.status_code == 201, response.text

    pt = _weights(client, "lm", fmt="pt")
    assert pt["lm_head.weight"].data_ptr() == pt["token_embedding.weight"].data_ptr()
    st_path = tmp_path / "download.safetensors"
    st_path.write_bytes(client.get("/v1/models/lm/versions/1/artifacts/weights").content)
    fresh = _tied_model()
    torch.nn.init.zeros_(fresh.token_embedding.weight)
    load_model(fresh, str(st_path))
    assert fresh.lm_head.weight is fresh.token_embedding.weight
    tokens = torch.randint(0, 50, (2, 7))
    with torch.inference_mode():
        assert torch.equal(fresh.eval()(tokens), model(tokens))


def test_multi_output_architecture_from_a_plugin_module(client: TestClient, tmp_path: Path) -> None:
    from tests.fixtures.architectures import TwoHeads

    create_model(client, "heads", "two-heads")
    response = upload(client, "heads", save(TwoHeads().state_dict(), tmp_path / "heads.pt"))
    assert response.status_code == 201, response.text
    assert [o["shape"] for o in response.json()["validation"]["forward"]["outputs"]] == [[2, 2], [2, 3]]


@pytest.mark.parametrize("architecture", ["mlp", "cnn", "transformer-encoder"])
def test_each_builtin_architecture_accepts_its_own_state_dict(
    client: TestClient, tmp_path: Path, architecture: str
) -> None:
    from app.architectures.registry import load_registry

    arch = load_registry().get(architecture)
    config = arch.effective_config({})
    module = arch.build(config)
    create_model(client, architecture, architecture)
    response = upload(client, architecture, save(module.state_dict(), tmp_path / "m.pt"))
    assert response.status_code == 201, response.text
    weights = _weights(client, architecture, fmt="safetensors")
    expected = module.state_dict()
    # safetensors keeps one name per tied group (lm_head.weight is the token embedding's)
    dropped = {"lm_head.weight"} if architecture == "transformer-encoder" else set()
    assert set(weights) == set(expected) - dropped
    for key, value in weights.items():
        assert torch.equal(value, expected[key])
