"""docs/architectures.md's plugin example works as written, and a plugin module that cannot be imported
stops `serve` with a message naming the module and the setting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.architectures.registry import PluginNotFound, load_registry
from tests.server import server_env

DOC = Path(__file__).resolve().parents[2] / "docs" / "architectures.md"


def test_the_plugin_example_is_found_and_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = DOC.read_text().split("## 3. Plugin code", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    (tmp_path / "my_models_doc_example.py").write_text(example.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    arch = load_registry(["my_models_doc_example"]).get("tiny-net")
    assert arch.source == "plugin" and arch.parameters == 16 * 32 + 32 + 32 * 3 + 3
    config = arch.effective_config({"classes": 5})
    module = arch.build(config)
    assert module(*arch.example_inputs(config)).shape == (2, 5)
    assert sorted(module.state_dict()) == ["body.0.bias", "body.0.weight", "head.bias", "head.weight"]


def test_a_plugin_module_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    with pytest.raises(PluginNotFound, match=r"no_such_plugin_module.*PYTHONPATH"):
        load_registry(["no_such_plugin_module"])
    env = server_env(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        WEIGHTVAULT_ARCHITECTURE_MODULES="no_such_plugin",
    )
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "cannot start: WEIGHTVAULT_ARCHITECTURE_MODULES names 'no_such_plugin'" in done.stderr
    assert "Traceback" not in done.stderr
