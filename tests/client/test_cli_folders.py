"""`weightvault push ./my-bert --create` and `weightvault pull --format hf`, against a real server."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.client.test_cli_arch import _ok
from tests.fixtures.hf import tiny_config, tiny_model
from weightvault import Client
from weightvault.folders import FolderTar

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")


def _outputs(model: Any) -> torch.Tensor:
    ids = torch.randint(0, 99, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_push_a_folder_with_create_then_pull_it_as_hf(run: Any, name: str, tmp_path: Path) -> None:
    model = tiny_model(tiny_config("GPT2LMHeadModel"))
    folder = tmp_path / "my-gpt2"
    model.save_pretrained(folder, max_shard_size="30KB")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))

    pushed = _ok(run("push", str(folder), "--model", name, "--create", "--json"))
    version = json.loads(pushed.stdout)
    assert {entry["filename"] for entry in version["source"]["files"]} == {p.name for p in folder.iterdir()}
    shown = json.loads(_ok(run("arch", "show", name, "--json")).stdout)
    assert shown["source"] == "registered" and shown["registration"]["config"]["architectures"] == [
        "GPT2LMHeadModel"
    ]

    out = tmp_path / "back"
    pulled = _ok(run("pull", f"{name}:1", "--format", "hf", "-o", str(out)))
    assert str(out) in pulled.stdout
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"model_max_length": 64}
    loaded = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert torch.equal(_outputs(loaded), _outputs(model))

    # a second push of the same folder adds a version to the same model and architecture
    again = json.loads(_ok(run("push", str(folder), "--model", name, "--create", "--json")).stdout)
    assert again["version"] == 2 and again["source"]["sha256"] == version["source"]["sha256"]


def test_a_folder_without_config_needs_an_architecture(run: Any, name: str, tmp_path: Path) -> None:
    folder = tmp_path / "weights-only"
    folder.mkdir()
    torch.save(tiny_model(tiny_config("BertModel")).state_dict(), folder / "pytorch_model.bin")
    result = run("push", str(folder), "--model", name, "--create")
    assert result.exit_code != 0
    assert "config.json" in result.stderr and "--architecture" in result.stderr


def test_the_python_client_pushes_a_folder_and_pulls_it_back(wv: Client, name: str, tmp_path: Path) -> None:
    model = tiny_model(tiny_config("BertModel"))
    folder = tmp_path / "my-bert"
    model.save_pretrained(folder)
    version = wv.push(name, folder, create=True)
    assert version.version == 1
    pulled = wv.pull_folder(f"{name}:latest", output=tmp_path / "back")
    loaded = transformers.BertModel.from_pretrained(pulled.path).eval()
    ids = torch.randint(0, 99, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state)


def test_the_folder_tar_is_a_real_tar_the_same_every_time_and_seekable(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 5)
    (folder / ".hidden").write_text("not sent")
    first, second = FolderTar(folder), FolderTar(folder)
    data = first.read()
    assert len(data) == first.size and second.read() == data
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.getnames() == ["config.json", "model.safetensors"]
        member = archive.extractfile("model.safetensors")
        assert member is not None and member.read() == bytes(range(256)) * 5
    for start in (0, 1, 511, 512, 700, first.size - 3):
        first.seek(start)
        assert first.read(1000) == data[start : start + 1000]
