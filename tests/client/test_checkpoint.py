"""The client's torch side: what a push saves, and reading weights back with ties intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_model
from torch import nn

from tests.checkpoints import SimpleModel, save, trained_simple_model
from weightvault.checkpoint import read_checkpoint, read_weights, restore, training_checkpoint


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight


def test_safetensors_weights_come_back_tied(tmp_path: Path) -> None:
    model = Tied()
    save_model(model, str(tmp_path / "w.safetensors"))
    state = read_weights(tmp_path / "w.safetensors", "safetensors")
    assert state.keys() == model.state_dict().keys()
    assert state["embed.weight"].data_ptr() == state["head.weight"].data_ptr()
    fresh = Tied()
    fresh.load_state_dict(state, strict=True)
    assert fresh.head.weight is fresh.embed.weight and torch.equal(fresh.embed.weight, model.embed.weight)


def test_pt_weights_and_full_checkpoints_load_with_weights_only(tmp_path: Path) -> None:
    model, optimizer = trained_simple_model()
    save(model.state_dict(), tmp_path / "w.pt")
    assert torch.equal(read_weights(tmp_path / "w.pt", "pt")["linear.weight"], model.linear.weight)
    save(training_checkpoint(model, optimizer=optimizer, epoch=5), tmp_path / "full.pt")
    full = read_checkpoint(tmp_path / "full.pt")
    assert full["epoch"] == 5 and set(full) == {"model_state_dict", "optimizer_state_dict", "epoch"}
    with pytest.raises(ValueError, match="model_state_dict"):
        read_checkpoint(tmp_path / "w.pt")


def test_a_module_alone_is_saved_as_its_state_dict() -> None:
    model = SimpleModel()
    assert training_checkpoint(model).keys() == {"linear.weight", "linear.bias"}
    assert training_checkpoint(model.state_dict(), step=7)["global_step"] == 7


def test_restore_is_strict_and_needs_what_it_is_asked_to_restore() -> None:
    model, _ = trained_simple_model()
    checkpoint = training_checkpoint(model, epoch=2)
    assert restore(checkpoint, SimpleModel()) == 2
    fresh = SimpleModel()
    with pytest.raises(ValueError, match="optimizer_state_dict"):
        restore(checkpoint, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        restore(checkpoint, nn.Sequential())
