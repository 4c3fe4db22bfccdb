"""Checkpoint files the tests upload, written the ways users write them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn


class SimpleModel(nn.Module):
    """The classic save/load tutorial's model (a *different* class from the server's, same layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def trained_simple_model(seed: int = 0) -> tuple[SimpleModel, torch.optim.SGD]:
    """A SimpleModel after two SGD steps with momentum, so the optimizer has real state."""
    torch.manual_seed(seed)
    model = SimpleModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        loss = model(torch.randn(8, 10)).pow(2).mean()
        loss.backward()
        optimizer.step()
    return model, optimizer


def save(obj: object, path: Path, *, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


TUTORIAL_SCRIPT = """
import torch
import torch.nn as nn

class SimpleModel(nn.Module):
    def __init__(self):
        super(SimpleModel, self).__init__()
        self.linear = nn.Linear(10, 1)

    def forward(self, x):
        return self.linear(x)

torch.manual_seed(0)
model = SimpleModel()
torch.save(model, {path!r})
torch.save(model(torch.ones(3, 10)).detach(), {path!r} + ".expected")
"""


def tutorial_whole_module(path: Path) -> tuple[Path, torch.Tensor]:
    """``torch.save(model, f)`` from a script, so the pickle names ``__main__.SimpleModel``."""
    script = textwrap.dedent(TUTORIAL_SCRIPT.format(path=str(path)))
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    expected = torch.load(str(path) + ".expected", weights_only=True)
    return path, expected
