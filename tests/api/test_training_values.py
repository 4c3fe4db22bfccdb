"""Whatever a checkpoint keeps beside its weights is either stored so that plain
``torch.load(weights_only=True)`` reads the full checkpoint back, or refused with a reason; never a 500.
What the version row shows of it (epoch, step, optimizer) is bounded and plain."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from tests.checkpoints import SimpleModel
from tests.conftest import create_model, stored_files

ACCEPTED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (extra entries, expected training summary)
    "negative-step": ({"global_step": -(10**30)}, {"epoch": None, "step": None, "optimizer": None}),
    "nan-epoch": ({"epoch": float("nan")}, {"epoch": None, "step": None, "optimizer": None}),
    "inf-loss": ({"epoch": 2, "loss": float("inf")}, {"epoch": 2, "step": None, "optimizer": None}),
    "long-optimizer-name": (
        {"optimizer_name": "A" * 100_000},
        {"epoch": None, "step": None, "optimizer": None},
    ),
    "nul-in-optimizer-name": (
        {"optimizer_name": "SGD\x00"},
        {"epoch": None, "step": None, "optimizer": None},
    ),
    "plain-optimizer-name": (
        {"optimizer_name": "AdamW", "step": 7},
        {"epoch": None, "step": 7, "optimizer": "AdamW"},
    ),
    "bytes-complex-set": (
        {b"raw": b"\x00\xff", "c": complex(1, 2), "s": {1, 2}, "epoch": torch.tensor(3)},
        {"epoch": None, "step": None, "optimizer": None},
    ),
}
REFUSED: dict[str, dict[str, Any]] = {
    "integer-over-2000-bits": {"epoch": 10**5000},
    "frozenset": {"tags": frozenset(["a"])},
    "huge-int-key": {"x": {2**70: 1}},
}


def _body(extra: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model_state_dict": SimpleModel().state_dict(), **extra}, buffer)
    return buffer.getvalue()


def _post(client: TestClient, body: bytes) -> Any:
    return client.post(
        "/v1/models/demo/versions", content=body, headers={"Content-Type": "application/octet-stream"}
    )


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_odd_training_values_are_kept_loadable_and_summarised_plainly(
    client: TestClient, tmp_path: Path, name: str
) -> None:
    extra, summary = ACCEPTED[name]
    create_model(client)
    response = _post(client, _body(extra))
    assert response.status_code == 201, response.text
    assert response.json()["training"] == summary
    full = client.get("/v1/models/demo/versions/1/artifacts/full")
    path = tmp_path / "full.pt"
    path.write_bytes(full.content)
    loaded = torch.load(path, weights_only=True)  # the contract's plain call, no map_location
    for key, value in extra.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded[key], value)
        elif value == value:  # NaN aside
            assert loaded[key] == value
    assert client.get("/v1/models/demo/versions").status_code == 200


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_values_plain_torch_load_could_not_read_back_are_refused(
    client: TestClient, data_dir: Path, name: str
) -> None:
    create_model(client)
    before = stored_files(data_dir)
    response = _post(client, _body(REFUSED[name]))
    assert response.status_code == 422, response.text
    assert len(response.json()["error"]["message"].split()) > 8
    assert stored_files(data_dir) == before
    assert client.get("/v1/models/demo/versions").json()["items"] == []
