"""`weightvault arch add / ls / show / rm` and the client's architecture calls, against a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import Result

from tests.fixtures.hf import tiny_config, tiny_model
from weightvault import Client

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def test_arch_add_ls_show_rm_with_a_config_json(run: Any, name: str, tmp_path: Path) -> None:
    config = tiny_config("BertForSequenceClassification")
    folder = tmp_path / "my-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))

    added = _ok(run("arch", "add", name, "--config", str(folder / "config.json")))
    assert f"registered {name}: registered (transformers)" in added.stdout
    assert "input input_ids: shape ['batch', 'sequence'] int64" in added.stdout
    listed = _ok(run("arch", "ls")).stdout
    assert any(line.startswith(f"{name}  registered (transformers)") for line in listed.splitlines())
    assert "simple-linear  builtin" in listed
    shown = _ok(run("arch", "show", name)).stdout
    assert "class: BertForSequenceClassification" in shown
    as_json = json.loads(_ok(run("arch", "show", name, "--json")).stdout)
    assert as_json["source"] == "registered" and as_json["registration"]["config"] == json.loads(
        json.dumps(config)
    )

    # a save_pretrained folder works as --config too; the name is then taken
    again = run("arch", "add", name, "--config", str(folder))
    assert again.exit_code == 1 and "architecture_exists" in again.stderr

    # push a state_dict of that class through the CLI, then rm refuses while the model exists
    weights = tmp_path / "w.pt"
    torch.save(tiny_model(config).state_dict(), weights)
    _ok(run("push", str(weights), "-m", name, "--create", "--architecture", name))
    in_use = run("arch", "rm", name)
    assert in_use.exit_code == 1 and name in in_use.stderr and "weightvault rm" in in_use.stderr
    _ok(run("rm", name, "--yes"))
    _ok(run("arch", "rm", name))
    assert run("arch", "show", name).exit_code == 1


def test_arch_add_refusals_speak_cli(run: Any, name: str, tmp_path: Path) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**tiny_config("BertModel"), "auto_map": {"AutoModel": "evil.Model"}}))
    refused = run("arch", "add", name, "--config", str(config_path))
    assert (
        refused.exit_code == 1
        and "remote code" in refused.stderr
        and "invalid_architecture" in refused.stderr
    )
    factory = run("arch", "add", name, "--library", "torchvision", "--factory", "models.resnet18")
    assert factory.exit_code == 1 and "WEIGHTVAULT_ARCHITECTURE_LIBRARIES" in factory.stderr
    readonly = run("arch", "rm", "simple-linear")
    assert readonly.exit_code == 1 and "architecture_read_only" in readonly.stderr
    assert run("arch", "add", name).exit_code == 2  # neither --config nor --factory


def test_the_python_client_registers_and_loads(wv: Client, name: str, tmp_path: Path) -> None:
    config = tiny_config("GPT2LMHeadModel")
    arch = wv.register_architecture(name, config=config, description="tiny gpt-2")
    assert arch["description"] == "tiny gpt-2" and arch["parameters"] > 0
    model = tiny_model(config)
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    wv.push(name, path, create=True, architecture=name)
    fresh = wv.load_into(tiny_model(config), f"{name}:latest")
    ids = torch.randint(0, 99, (1, 8))
    with torch.inference_mode():
        assert torch.equal(fresh(ids).logits, model(ids).logits)
    wv.delete_model(name)
    wv.delete_architecture(name)
    assert name not in [a["name"] for a in wv.list_architectures()]
