"""Architectures registered over HTTP: transformers configs, allowed-library factories, and what is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import create_model
from tests.fixtures.hf import state_dict_bytes, tiny_config, tiny_model

pytest.importorskip("transformers")


def register(client: TestClient, name: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/architectures", json={"name": name, "library": "transformers", "config": config, **extra}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def push(client: TestClient, model: str, body: bytes) -> dict[str, Any]:
    response = client.post(
        f"/v1/models/{model}/versions", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    return dict(body)


@pytest.mark.parametrize(
    ("class_name", "inputs"),
    [
        ("BertModel", ["input_ids", "attention_mask", "token_type_ids"]),
        ("BertForSequenceClassification", ["input_ids", "attention_mask", "token_type_ids"]),
        ("GPT2LMHeadModel", ["input_ids", "attention_mask"]),
        ("ViTModel", ["pixel_values"]),
    ],
)
def test_register_a_transformers_config_and_push_its_state_dict(
    client: TestClient, class_name: str, inputs: list[str]
) -> None:
    config = tiny_config(class_name)
    model = tiny_model(config)
    arch = register(client, "tiny", config)
    assert arch["source"] == "registered" and arch["library"] == "transformers"
    assert arch["parameters"] == sum(p.numel() for p in model.parameters())
    assert [spec["name"] for spec in arch["inputs"]] == inputs
    if class_name != "ViTModel":
        assert arch["inputs"][0] == {"name": "input_ids", "shape": ["batch", "sequence"], "dtype": "int64"}
    else:
        assert arch["inputs"][0]["shape"] == ["batch", 3, 30, 30]
    assert client.get("/v1/architectures/tiny").json() == arch
    assert "tiny" in [a["name"] for a in client.get("/v1/architectures").json()["items"]]

    create_model(client, "m", "tiny")
    for fmt in ("pt", "safetensors"):
        version = push(client, "m", state_dict_bytes(model, fmt=fmt))
        assert version["validation"]["status"] == "passed"
        assert version["validation"]["strict"] is True
        assert version["source"]["format"] == ("safetensors" if fmt == "safetensors" else "torch_zip")


def test_gpt2_tied_head_loads_back_tied(client: TestClient) -> None:
    import io

    import safetensors.torch
    import torch

    config = tiny_config("GPT2LMHeadModel")
    model = tiny_model(config)
    register(client, "gpt", config)
    create_model(client, "g", "gpt")
    push(client, "g", state_dict_bytes(model, fmt="safetensors"))
    weights = client.get("/v1/models/g/versions/1/artifacts/weights", params={"format": "pt"}).content
    state = torch.load(io.BytesIO(weights), weights_only=True)
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    fresh = tiny_model(config)
    fresh.load_state_dict(state)
    ids = torch.randint(0, 99, (2, 8))
    with torch.inference_mode():
        assert torch.equal(fresh(ids).logits, model(ids).logits)
    served = safetensors.torch.load(
        client.get("/v1/models/g/versions/1/artifacts/weights", params={"format": "safetensors"}).content
    )
    assert "transformer.wte.weight" in served


def test_a_state_dict_of_another_config_is_an_architecture_mismatch(client: TestClient) -> None:
    register(client, "tiny", tiny_config("BertModel"))
    create_model(client, "m", "tiny")
    other = tiny_model(tiny_config("BertModel", hidden_size=48, intermediate_size=40))
    response = client.post(
        "/v1/models/m/versions",
        content=state_dict_bytes(other),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert error(response, 422, "architecture_mismatch")["details"]["shape_mismatches"]


def test_declared_inputs_are_kept(client: TestClient) -> None:
    config = tiny_config("BertModel")
    arch = register(
        client, "tiny", config, inputs=[{"name": "input_ids", "shape": ["batch", 5], "dtype": "int64"}]
    )
    assert arch["inputs"] == [{"name": "input_ids", "shape": ["batch", 5], "dtype": "int64"}]
    create_model(client, "m", "tiny")
    version = push(client, "m", state_dict_bytes(tiny_model(config)))
    assert version["validation"]["forward"]["inputs"] == [{"shape": [2, 5], "dtype": "int64"}]
    bad = client.post(
        "/v1/architectures",
        json={
            "name": "bad",
            "library": "transformers",
            "config": config,
            "inputs": [{"name": "images", "shape": ["batch", 3], "dtype": "float32"}],
        },
    )
    assert "images" in error(bad, 422, "invalid_architecture")["message"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"auto_map": {"AutoModel": "modeling_evil.EvilModel"}}, "remote code"),
        ({"architectures": ["EvilModel"]}, "EvilModel"),
        ({"architectures": ["AutoModel"]}, "AutoModel"),
        ({"architectures": ["BertConfig"]}, "BertConfig"),
        ({"architectures": ["__class__"]}, "__class__"),
        ({"architectures": []}, "architectures"),
        ({"model_type": "gpt2"}, "model_type"),
        ({"num_hidden_layers": 10**7}, "layers"),
    ],
)
def test_refused_configs(client: TestClient, change: dict[str, Any], says: str) -> None:
    config = {**tiny_config("BertModel"), **change}
    response = client.post(
        "/v1/architectures", json={"name": "x", "library": "transformers", "config": config}
    )
    assert says in error(response, 422, "invalid_architecture")["message"]
    assert client.get("/v1/architectures/x").status_code == 404


def test_auto_map_nested_anywhere_is_refused(client: TestClient) -> None:
    config = tiny_config("BertModel", text_config={"auto_map": {"AutoConfig": "x.Y"}})
    response = client.post(
        "/v1/architectures", json={"name": "x", "library": "transformers", "config": config}
    )
    assert error(response, 422, "invalid_architecture")["details"]["key"] == "text_config.auto_map"


def test_an_oversize_config_is_refused_within_seconds(client: TestClient) -> None:
    config = tiny_config(
        "BertModel", vocab_size=10**9, hidden_size=4096, num_attention_heads=16, intermediate_size=16384
    )
    started = time.monotonic()
    response = client.post(
        "/v1/architectures", json={"name": "huge", "library": "transformers", "config": config}
    )
    assert time.monotonic() - started < 20
    details = error(response, 422, "invalid_architecture")["details"]
    assert details["parameters"] > 4 * 10**12 and details["limit"] == 20_000_000_000


def test_names_conflicts_and_read_only(client: TestClient) -> None:
    config = tiny_config("BertModel")
    body = {"name": "Bad Name", "library": "transformers", "config": config}
    error(client.post("/v1/architectures", json=body), 422, "invalid_name")
    register(client, "tiny", config)
    for name in ("tiny", "mlp", "two-heads"):
        error(client.post("/v1/architectures", json={**body, "name": name}), 409, "architecture_exists")
    error(client.delete("/v1/architectures/mlp"), 409, "architecture_read_only")
    assert client.get("/v1/architectures/mlp").json()["source"] == "builtin"
    plugin = error(client.delete("/v1/architectures/two-heads"), 409, "architecture_read_only")
    assert plugin["details"]["source"] == "plugin"
    error(client.delete("/v1/architectures/nope"), 404, "architecture_not_found")

    create_model(client, "b", "tiny")
    create_model(client, "a", "tiny")
    in_use = error(client.delete("/v1/architectures/tiny"), 409, "architecture_in_use")
    assert in_use["details"]["models"] == ["a", "b"]
    assert client.delete("/v1/models/a").status_code == 204
    assert client.delete("/v1/models/b").status_code == 204
    assert client.delete("/v1/architectures/tiny").status_code == 204
    error(client.get("/v1/architectures/tiny"), 404, "architecture_not_found")
    error(
        client.post("/v1/models", json={"name": "c", "architecture": "tiny"}), 422, "architecture_not_found"
    )
    # the name is free again, for a different model
    again = register(client, "tiny", tiny_config("GPT2LMHeadModel"))
    assert again["inputs"][0]["name"] == "input_ids"


def test_registered_architectures_take_no_model_config(client: TestClient) -> None:
    register(client, "tiny", tiny_config("BertModel"))
    response = client.post("/v1/models", json={"name": "m", "architecture": "tiny", "config": {"x": 1}})
    error(response, 422, "invalid_config")
    assert create_model(client, "m", "tiny")["config"] == {}


def test_other_libraries_must_be_allowed(client: TestClient) -> None:
    body = {"name": "resnet", "library": "torchvision", "factory": "models.resnet18", "kwargs": {}}
    details = error(client.post("/v1/architectures", json=body), 422, "invalid_architecture")["details"]
    assert details["allowed"] == ["transformers"]


def test_without_transformers_installed_registration_says_to_install_the_extra(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    body = {"name": "tiny", "library": "transformers", "config": {"architectures": ["BertModel"]}}
    response = client.post("/v1/architectures", json=body)
    assert "weightvault[transformers]" in error(response, 422, "invalid_architecture")["message"]
    assert client.get("/v1/architectures/mlp").status_code == 200


@pytest.fixture
def torch_allowed(settings: Settings) -> Iterator[TestClient]:
    allowed = settings.model_copy(update={"architecture_libraries": ["transformers", "torch"]})
    with TestClient(create_app(allowed), raise_server_exceptions=False) as test_client:
        yield test_client


def test_an_allowed_library_factory_with_declared_inputs(torch_allowed: TestClient) -> None:
    import torch

    client = torch_allowed
    body = {
        "name": "lin",
        "library": "torch",
        "factory": "nn.Linear",
        "kwargs": {"in_features": 4, "out_features": 2},
        "inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
    }
    arch = client.post("/v1/architectures", json=body).json()
    assert arch["source"] == "registered" and arch["library"] == "torch" and arch["parameters"] == 10
    assert arch["registration"] == {"config": None, "factory": "nn.Linear", "kwargs": body["kwargs"]}
    create_model(client, "m", "lin")
    push(client, "m", state_dict_bytes(torch.nn.Linear(4, 2)))
    wrong = client.post(
        "/v1/models/m/versions",
        content=state_dict_bytes(torch.nn.Linear(4, 3)),
        headers={"Content-Type": "application/octet-stream"},
    )
    error(wrong, 422, "architecture_mismatch")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"factory": "load"}, "not an nn.Module class"),
        ({"factory": "hub.load", "kwargs": {"repo_or_dir": "x/y", "model": "z"}}, "not an nn.Module class"),
        ({"factory": "nn.functional.relu"}, "not an nn.Module class"),
        ({"factory": "nn._reduction"}, "constructor name"),
        ({"factory": "nn.Linear", "kwargs": {"pretrained": True}}, "pretrained"),
        ({"factory": "nn.Linear", "kwargs": {"bogus": 1}}, "refused"),
        ({"inputs": None}, "declare them"),
        ({"factory": None}, "needs `factory`"),
    ],
)
def test_refused_factories(torch_allowed: TestClient, change: dict[str, Any], says: str) -> None:
    body = {
        "name": "lin",
        "library": "torch",
        "factory": "nn.Linear",
        "kwargs": {"in_features": 4, "out_features": 2},
        "inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}],
        **change,
    }
    body = {k: v for k, v in body.items() if v is not None}
    response = torch_allowed.post("/v1/architectures", json=body)
    assert says in error(response, 422, "invalid_architecture")["message"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"allocate_bytes": 64 * 1024**3}, "memory"), ({"sleep_seconds": 60}, "time")],
)
def test_a_constructor_that_allocates_or_stalls_costs_a_child_not_the_server(
    settings: Settings, kwargs: dict[str, Any], reason: str
) -> None:
    limited = settings.model_copy(
        update={
            "architecture_libraries": ["transformers", "tests.fixtures.hungry"],
            "ingest_memory_base_bytes": 1024**3,
            "ingest_time_limit_base_seconds": 3.0,
        }
    )
    body = {
        "name": "hungry",
        "library": "tests.fixtures.hungry",
        "factory": "Hungry",
        "kwargs": kwargs,
        "inputs": [{"name": "x", "shape": ["batch", 2]}],
    }
    with TestClient(create_app(limited), raise_server_exceptions=False) as client:
        started = time.monotonic()
        response = client.post("/v1/architectures", json=body)
        assert time.monotonic() - started < 30
        refused = error(response, 422, "invalid_architecture")
        assert "limit" in refused["message"] or reason in refused["message"], refused
        small = client.post("/v1/architectures", json={**body, "kwargs": {}})
        assert small.status_code == 201 and small.json()["parameters"] == 3


def test_oversized_or_deeply_nested_recipes_are_refused(client: TestClient) -> None:
    config: dict[str, Any] = tiny_config("BertModel")
    deep: Any = 1
    for _ in range(200):
        deep = {"x": deep}
    for body_config in ({**config, "extra": deep}, {**config, "extra": "x" * (1024 * 1024 + 1)}):
        response = client.post(
            "/v1/architectures", json={"name": "x", "library": "transformers", "config": body_config}
        )
        error(response, 422, "invalid_architecture")
