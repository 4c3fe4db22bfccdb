"""Weights that do not fit the architecture are refused with every problem named, and nothing is kept."""

from __future__ import annotations

from pathlib import Path

import torch
from fastapi.testclient import TestClient

from tests.checkpoints import SimpleModel, save
from tests.conftest import create_model, stored_files, upload


def test_missing_unexpected_and_misshaped_keys_are_all_named(
    client: TestClient, tmp_path: Path, data_dir: Path
) -> None:
    create_model(client)
    before = stored_files(data_dir)
    state = {
        "linear.weight": torch.zeros(2, 10),  # wrong shape
        "linear.extra": torch.zeros(3),  # unexpected
        # linear.bias missing
    }
    response = upload(client, "demo", save(state, tmp_path / "bad.pt"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "architecture_mismatch"
    assert error["details"]["missing_keys"] == ["linear.bias"]
    assert error["details"]["unexpected_keys"] == ["linear.extra"]
    assert error["details"]["shape_mismatches"] == [
        {"key": "linear.weight", "expected": [1, 10], "got": [2, 10]}
    ]
    assert "linear.bias" in error["message"]
    assert stored_files(data_dir) == before
    assert client.get("/v1/models/demo").json()["latest_version"] is None


def test_weights_for_another_architecture_are_refused(client: TestClient, tmp_path: Path) -> None:
    create_model(
        client, "classifier", "mlp", config={"in_features": 10, "hidden_sizes": [4], "out_features": 2}
    )
    response = upload(client, "classifier", save(SimpleModel().state_dict(), tmp_path / "simple.pt"))
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert set(details["missing_keys"]) == {
        "layers.0.weight",
        "layers.0.bias",
        "layers.2.weight",
        "layers.2.bias",
    }
    assert set(details["unexpected_keys"]) == {"linear.weight", "linear.bias"}


def test_a_mismatch_says_which_prefixes_were_tried(client: TestClient, tmp_path: Path) -> None:
    create_model(
        client, "classifier", "mlp", config={"in_features": 10, "hidden_sizes": [4], "out_features": 2}
    )
    wrapped = {f"module.encoder.{k}": v for k, v in SimpleModel().state_dict().items()}
    response = upload(client, "classifier", save(wrapped, tmp_path / "wrapped.pt"))
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["prefixes_tried"] == {"removed": ["module.", "encoder.", "linear."], "added": ["layers."]}
    assert details["unexpected_keys"] == ["encoder.linear.weight", "encoder.linear.bias"]  # module. went


def test_config_decides_the_expected_shapes(client: TestClient, tmp_path: Path) -> None:
    create_model(client, "wide", "mlp", config={"in_features": 10, "hidden_sizes": [8], "out_features": 2})
    create_model(client, "narrow", "mlp", config={"in_features": 10, "hidden_sizes": [4], "out_features": 2})
    from app.architectures.builtin import MLP, MLPConfig

    weights = save(
        MLP(MLPConfig(in_features=10, hidden_sizes=[8], out_features=2)).state_dict(), tmp_path / "w.pt"
    )
    assert upload(client, "wide", weights).status_code == 201
    refused = upload(client, "narrow", weights)
    assert refused.status_code == 422
    shapes = refused.json()["error"]["details"]["shape_mismatches"]
    assert {"key": "layers.0.weight", "expected": [4, 10], "got": [8, 10]} in shapes


def test_checkpoint_dict_without_weights_is_unreadable(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    response = upload(client, "demo", save({"epoch": 3, "notes": "no weights here"}, tmp_path / "empty.pt"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unreadable_checkpoint"
    assert "model_state_dict" in error["message"]
