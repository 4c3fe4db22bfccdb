"""Inputs found by review that once crashed the server or slipped past the checks."""

from __future__ import annotations

import collections
import io
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.architectures.builtin import SimpleModel as RegisteredSimpleModel
from tests.checkpoints import SimpleModel, save, trained_simple_model
from tests.conftest import create_model, stored_files, upload, version_count


def _zip(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _post(client: TestClient, body: bytes) -> dict[str, object]:
    response = client.post("/v1/models/demo/versions", content=body)
    assert response.status_code < 500, response.text
    return {"status": response.status_code, **response.json()}


class _CallsConstructor:
    """Pickles as ``nn.Linear(n, n)``: a file that asks the loader to allocate n*n floats."""

    def __reduce__(self) -> tuple[object, tuple[int, int]]:
        return nn.Linear, (8000, 8000)


def test_pickle_cannot_call_an_allowed_constructor(client: TestClient) -> None:
    create_model(client)
    result = _post(client, _zip({"model_state_dict": SimpleModel().state_dict(), "x": _CallsConstructor()}))
    assert result["status"] == 422
    assert result["error"]["code"] == "unsafe_checkpoint"  # type: ignore[index]


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("_state_dict_hooks", collections.OrderedDict({0: nn.Linear})),
        ("_modules", collections.OrderedDict(linear=5)),
        ("_parameters", None),
    ],
)
def test_module_pickles_are_read_without_calling_their_methods(
    client: TestClient, attribute: str, value: object
) -> None:
    create_model(client)
    module = RegisteredSimpleModel()
    module.__dict__[attribute] = value
    result = _post(client, _zip(module))
    assert result["status"] == 422
    assert result["error"]["code"] == "unreadable_checkpoint"  # type: ignore[index]


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float8_e4m3fn])
def test_weights_of_an_unusable_dtype_are_a_mismatch(client: TestClient, dtype: torch.dtype) -> None:
    create_model(client)
    state = {k: v.to(dtype) for k, v in SimpleModel().state_dict().items()}
    result = _post(client, _zip(state))
    assert result["status"] == 422
    error = result["error"]
    assert error["code"] == "architecture_mismatch"  # type: ignore[index]
    assert {d["key"] for d in error["details"]["dtype_mismatches"]} == {"linear.weight", "linear.bias"}  # type: ignore[index]


def test_meta_tensors_are_refused(client: TestClient) -> None:
    create_model(client)
    with torch.device("meta"):
        state = SimpleModel().state_dict()
    result = _post(client, _zip(state))
    assert result["status"] == 422


def test_nan_weights_are_stored_faithfully(client: TestClient) -> None:
    create_model(client)
    state = {k: torch.full_like(v, float("nan")) for k, v in SimpleModel().state_dict().items()}
    result = _post(client, _zip(state))
    assert result["status"] == 201
    assert result["validation"]["forward"]["finite"] is False  # type: ignore[index]


def test_a_stale_model_state_dict_entry_does_not_replace_the_weights(client: TestClient) -> None:
    model, _ = trained_simple_model()
    create_model(client)
    result = _post(
        client, _zip({"model_state_dict": "garbage", "state_dict": model.state_dict(), "epoch": 2})
    )
    assert result["status"] == 201
    full = torch.load(
        io.BytesIO(client.get("/v1/models/demo/versions/1/artifacts/full").content), weights_only=True
    )
    assert torch.equal(full["model_state_dict"]["linear.weight"], model.linear.weight)


def test_modules_beside_the_weights_become_state_dicts(client: TestClient) -> None:
    create_model(client)
    ema = RegisteredSimpleModel()
    result = _post(client, _zip({"model_state_dict": SimpleModel().state_dict(), "ema": ema, "epoch": 1}))
    assert result["status"] == 201, result
    full = torch.load(
        io.BytesIO(client.get("/v1/models/demo/versions/1/artifacts/full").content), weights_only=True
    )
    assert torch.equal(full["ema"]["linear.weight"], ema.linear.weight)


def test_truncated_legacy_file(client: TestClient, tmp_path: Path) -> None:
    create_model(client)
    data = save(SimpleModel().state_dict(), tmp_path / "old.pt", legacy=True).read_bytes()
    for cut in (20, 90, len(data) // 2, len(data) - 5):
        result = _post(client, data[:cut])
        assert result["status"] == 422 and result["error"]["code"] == "unreadable_checkpoint"  # type: ignore[index]


def test_ambiguous_compiled_and_plain_keys(client: TestClient) -> None:
    create_model(client)
    state = SimpleModel().state_dict()
    state.update({"_orig_mod." + k: v for k, v in SimpleModel().state_dict().items()})
    assert _post(client, _zip(state))["status"] == 422


@pytest.mark.parametrize(
    "metadata", ['{"a": "\\ud800"}', '{"a": NaN}', '{"a": 1e999}', "[" * 5000 + "]" * 5000]
)
def test_metadata_that_cannot_round_trip_is_refused(
    client: TestClient, tmp_path: Path, metadata: str
) -> None:
    create_model(client)
    response = upload(client, "demo", save(SimpleModel().state_dict(), tmp_path / "w.pt"), metadata=metadata)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_metadata"
    assert client.get("/v1/models/demo/versions").status_code == 200


def test_echoed_surrogates_do_not_break_error_bodies(client: TestClient) -> None:
    create_model(client)
    response = client.put(
        "/v1/models/demo/aliases/prod",
        content=b'{"version": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "version_not_found"


@pytest.mark.parametrize("after", [2**63, True, None, 1.5, [1]])
def test_forged_cursors(client: TestClient, after: object) -> None:
    import base64

    create_model(client)
    cursor = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
    for path in ("/v1/models", "/v1/models/demo/versions", "/v1/jobs"):
        response = client.get(path, params={"cursor": cursor})
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_cursor"


def test_multipart_extra_fields_are_bounded_and_content_type_is_case_insensitive(
    client: TestClient, tmp_path: Path, data_dir: Path
) -> None:
    create_model(client)
    path = save(SimpleModel().state_dict(), tmp_path / "w.pt")
    before = stored_files(data_dir)
    with path.open("rb") as handle:
        response = client.post(
            "/v1/models/demo/versions", files={"file": ("w.pt", handle)}, data={"junk": "x" * 200_000}
        )
    assert response.status_code == 422 and response.json()["error"]["code"] == "limit_exceeded"
    assert stored_files(data_dir) == before and version_count(client, "demo") == 0
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="w.pt"\r\n\r\n'.encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    mixed_case = client.post(
        "/v1/models/demo/versions",
        content=body,
        headers={"Content-Type": f"Multipart/Form-Data; boundary={boundary}"},
    )
    assert mixed_case.status_code == 201, mixed_case.text


def test_deeply_nested_json_body_is_invalid_request(client: TestClient) -> None:
    response = client.post("/v1/models", content=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
