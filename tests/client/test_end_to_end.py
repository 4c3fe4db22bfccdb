"""The Python client against a real `weightvault serve` process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from tests.checkpoints import SimpleModel, save, trained_simple_model
from tests.client.conftest import Server
from weightvault import BadRequest, ChecksumMismatch, Client, Conflict, ConversionFailed, NotFound
from weightvault import download as download_module
from weightvault.progress import Task, Unit

pytestmark = pytest.mark.slow


class MLP(nn.Module):
    """The server's default `mlp` (784-128-64-10): about 440 kB of weights, several download chunks."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        )


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MLP()


def _push_mlp(wv: Client, name: str) -> None:
    wv.push(name, _mlp(), create=True, architecture="mlp")


def test_push_a_training_checkpoint_and_load_it_back(wv: Client, name: str) -> None:
    model, optimizer = trained_simple_model()
    version = wv.push(
        name,
        model,
        optimizer=optimizer,
        epoch=10,
        metadata={"acc": 0.98, "tags": ["baseline"]},
        create=True,
        architecture="simple-linear",
        description="the tutorial's model",
    )
    assert (version.model, version.version, version.epoch) == (name, 1, 10)
    assert version.training["optimizer"] == "SGD"
    assert version.source["layout"] == "training_checkpoint" and version.source["filename"] == "checkpoint.pt"
    assert version.metadata == {"acc": 0.98, "tags": ["baseline"]}
    assert {(a.kind, a.format) for a in version.artifacts} >= {("full", "pt"), ("weights", "safetensors")}
    assert wv.get_model(name).description == "the tutorial's model"

    weights = wv.load_weights(f"{name}@latest")
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(wv.load_weights(f"{name}:1", format="pt")["linear.bias"], model.linear.bias)
    full = wv.load_checkpoint(name)
    assert full["epoch"] == 10 and "optimizer_state_dict" in full


def test_push_takes_a_path_a_file_object_and_a_state_dict(wv: Client, name: str, tmp_path: Path) -> None:
    wv.create_model(name, "simple-linear")
    path = save(SimpleModel().state_dict(), tmp_path / "sd.pt")
    assert wv.push(name, path).source["filename"] == "sd.pt"
    assert wv.push(name, str(path)).version == 2
    with path.open("rb") as handle:
        assert wv.push(name, handle).source["sha256"] == wv.get_version(f"{name}:1").source["sha256"]
    assert wv.push(name, SimpleModel().state_dict()).source["layout"] == "state_dict"
    # create=True on an existing model just pushes
    assert wv.push(name, path, create=True, architecture="simple-linear").version == 5
    assert [v.version for v in wv.list_versions(name)] == [1, 2, 3, 4, 5]


def test_resume_gives_the_same_next_optimizer_step(wv: Client, name: str) -> None:
    model, optimizer = trained_simple_model(seed=3)
    wv.push(name, model, optimizer=optimizer, epoch=7, create=True, architecture="simple-linear")

    torch.manual_seed(99)
    fresh = SimpleModel()
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.01, momentum=0.9)
    assert wv.resume(name, fresh, fresh_optimizer) == 7

    batch = torch.randn(8, 10)
    for net, opt in ((model, optimizer), (fresh, fresh_optimizer)):
        opt.zero_grad()
        net(batch).pow(2).mean().backward()
        opt.step()
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_load_into_is_strict(wv: Client, name: str) -> None:
    model, _ = trained_simple_model()
    wv.push(name, model, create=True, architecture="simple-linear")
    wv.set_alias(name, "production", 1)
    loaded = wv.load_into(SimpleModel(), f"{name}@production")
    assert torch.equal(loaded.linear.weight, model.linear.weight)

    class Wider(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(10, 1)
            self.extra = nn.Linear(1, 1)

    with pytest.raises(RuntimeError, match="Missing key"):
        wv.load_into(Wider(), f"{name}:1")
    wv.load_into(Wider(), f"{name}:1", strict=False)


def test_a_second_pull_is_a_304_served_from_the_cache(
    wv: Client, name: str, server: Server, tmp_path: Path
) -> None:
    _push_mlp(wv, name)
    first = wv.pull(name, output=tmp_path / "a.safetensors")
    second = wv.pull(name, output=tmp_path / "b.safetensors")
    assert not first.from_cache and first.transferred == first.size > 400_000
    assert second.from_cache and second.transferred == 0
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert server.statuses(f"/v1/models/{name}/versions/latest/artifacts", 2) == [200, 304]
    # Another client on the same cache: nothing transferred either.
    with Client(wv.url, cache_dir=wv.cache.root, progress=False) as other:
        assert other.pull(name).from_cache


class Interrupted(Exception):
    pass


class InterruptAfter:
    """A progress reporter that breaks the transfer once ``limit`` bytes arrived (like Ctrl-C)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def task(
        self, description: str, *, total: int | None, completed: int = 0, unit: Unit = "bytes"
    ) -> AbstractContextManager[Task]:
        limit = self.limit

        class Counting:
            seen = 0

            def advance(self, amount: int) -> None:
                self.seen += amount
                if self.seen >= limit:
                    raise Interrupted

            def describe(self, text: str) -> None:
                pass

        @contextmanager
        def task() -> Iterator[Task]:
            yield Counting()

        return task()


def test_an_interrupted_download_resumes_with_range(
    wv: Client, name: str, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _push_mlp(wv, name)
    monkeypatch.setattr(download_module, "DOWNLOAD_CHUNK_BYTES", 16 * 1024)
    with (
        Client(wv.url, cache_dir=wv.cache.root, progress=InterruptAfter(160 * 1024)) as flaky,
        pytest.raises(Interrupted),
    ):
        flaky.pull(f"{name}:1", kind="full", output=tmp_path / "full.pt")
    assert not (tmp_path / "full.pt").exists()

    resumed = wv.pull(f"{name}:1", kind="full", output=tmp_path / "full.pt")
    assert resumed.resumed_from >= 160 * 1024
    assert resumed.transferred == resumed.size - resumed.resumed_from
    assert (
        torch.load(tmp_path / "full.pt", weights_only=True)["model_state_dict"].keys()
        == _mlp().state_dict().keys()
    )
    assert server.statuses(f"/v1/models/{name}/versions/1/artifacts/full", 2) == [200, 206]


def test_a_corrupt_partial_download_is_caught_and_nothing_is_placed(
    wv: Client, name: str, tmp_path: Path
) -> None:
    _push_mlp(wv, name)
    sha256 = wv.pull(name).sha256
    # Make the cache look like an interrupted download whose first half got corrupted on disk.
    wv.cache.blob(sha256).unlink()
    good = wv.get_version(name).artifact("weights", "safetensors")
    assert good is not None and good.sha256 == sha256
    wv.cache.partial(sha256).write_bytes(b"\0" * (good.size // 2))

    dest = tmp_path / "weights.safetensors"
    with pytest.raises(ChecksumMismatch):
        wv.pull(name, output=dest)
    assert not dest.exists() and not wv.cache.has_blob(sha256) and wv.cache.partial_size(sha256) == 0
    assert wv.pull(name, output=dest).sha256 == sha256  # the next try downloads it whole


def test_to_onnx_waits_and_returns_a_file_onnxruntime_runs(wv: Client, name: str, tmp_path: Path) -> None:
    model, _ = trained_simple_model()
    wv.push(name, model, create=True, architecture="simple-linear")
    path = wv.to_onnx(f"{name}:1", wait=True, timeout=300)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 10)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-5)

    again = wv.to_onnx(f"{name}:latest", output=tmp_path / "m.onnx")  # the same job: 200, and cached
    assert again == tmp_path / "m.onnx" and again.read_bytes() == path.read_bytes()
    job = wv.to_onnx(name, wait=False)
    assert job.status == "succeeded" and job.artifact is not None and job.version == 1


def test_errors_are_typed_and_carry_the_servers_code_and_message(
    wv: Client, name: str, tmp_path: Path
) -> None:
    with pytest.raises(NotFound) as missing:
        wv.load_weights(f"{name}:1")
    assert (missing.value.status, missing.value.code) == (404, "model_not_found")
    assert name in missing.value.message

    wv.create_model(name, "simple-linear")
    with pytest.raises(Conflict) as exists:
        wv.create_model(name, "simple-linear")
    assert exists.value.code == "model_exists"
    assert wv.create_model(name, "mlp", exist_ok=True).architecture == "simple-linear"

    with pytest.raises(NotFound) as no_version:
        wv.get_version(f"{name}:9")
    assert no_version.value.code == "version_not_found"

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BadRequest) as unreadable:
        wv.push(name, garbage)
    assert unreadable.value.code == "unreadable_checkpoint"

    with pytest.raises(BadRequest) as mismatch:
        wv.push(name, {"linear.weight": torch.zeros(2, 10), "linear.bias": torch.zeros(2)})
    assert mismatch.value.code == "architecture_mismatch"
    assert mismatch.value.details["shape_mismatches"]

    with pytest.raises(NotFound) as no_target:
        wv.set_alias(name, "production", 1)
    assert no_target.value.code == "version_not_found"
    wv.push(name, SimpleModel().state_dict())
    with pytest.raises(BadRequest) as reserved:
        wv.set_alias(name, "latest", 1)
    assert (reserved.value.status, reserved.value.code) == (422, "invalid_name")


def test_a_failed_conversion_raises_with_the_jobs_code(wv: Client, name: str) -> None:
    wv.push(
        name,
        {"linear.weight": torch.eye(4), "linear.bias": torch.zeros(4)},
        create=True,
        architecture="bessel",
    )
    with pytest.raises(ConversionFailed) as failed:
        wv.to_onnx(name, timeout=300)
    assert failed.value.code and failed.value.message and failed.value.job_id


def test_large_metadata_travels_in_the_query(wv: Client, name: str) -> None:
    metadata = {"notes": "x" * 40_000, "nested": {"a": [1, 2, 3]}}
    version = wv.push(
        name, SimpleModel().state_dict(), metadata=metadata, create=True, architecture="simple-linear"
    )
    assert version.metadata == metadata
    assert json.dumps(wv.get_version(f"{name}:1").metadata) == json.dumps(metadata)


def test_tied_weights_load_back_tied(wv: Client, name: str) -> None:
    from app.architectures.registry import load_registry

    arch = load_registry().get("transformer-encoder")
    torch.manual_seed(0)
    model = arch.build(arch.effective_config({}))
    wv.push(name, model, create=True, architecture="transformer-encoder")
    for fmt in ("safetensors", "pt"):
        state = wv.load_weights(name, format=fmt)
        assert state.keys() == model.state_dict().keys()
        assert state["lm_head.weight"].data_ptr() == state["token_embedding.weight"].data_ptr(), fmt
    fresh = wv.load_into(arch.build(arch.effective_config({})), name)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
