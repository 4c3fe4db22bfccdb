"""The client needs httpx (and torch to load weights), never the server's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "pydantic_settings",
    "onnxruntime",
    "onnx",
    "uvicorn",
)
SERVER_MODULES = (
    "app.main",
    "app.settings",
    "app.deps",
    "app.db",
    "app.versions",
    "app.checkpoints",
    "app.jobs",
)


def _modules_after(code: str) -> set[str]:
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT, timeout=120
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def _server_side(modules: set[str]) -> list[str]:
    top = {name.split(".")[0] for name in modules}
    return sorted(
        [name for name in SERVER_SIDE if name in top]
        + [name for name in modules if any(name == m or name.startswith(m + ".") for m in SERVER_MODULES)]
    )


def test_importing_the_client_loads_no_server_module_and_not_even_torch() -> None:
    modules = _modules_after(
        "import weightvault\nfrom weightvault import Client\nClient('http://x', progress=False)"
    )
    assert _server_side(modules) == []
    assert "torch" not in modules  # imported on first use, so `weightvault ls` starts fast


def test_pushing_and_loading_uses_torch_but_still_no_server_module() -> None:
    modules = _modules_after(
        """
        import io, tempfile
        import torch
        from weightvault import checkpoint, Client
        from weightvault.upload import open_source

        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with open_source(model, optimizer=optimizer, scheduler=None, epoch=1, step=None) as upload:
            assert upload.size > 0
        from safetensors.torch import save_file
        path = tempfile.mkdtemp() + "/w.safetensors"
        save_file(model.state_dict(), path)
        assert checkpoint.read_weights(path, "safetensors").keys() == model.state_dict().keys()
        """
    )
    assert "torch" in modules and "safetensors" in modules
    assert _server_side(modules) == []


def test_the_cli_commands_load_no_server_module() -> None:
    modules = _modules_after("import weightvault.commands")
    assert _server_side(modules) == []
