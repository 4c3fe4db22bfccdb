"""A server whose environment cannot import transformers starts, serves, and answers a transformers
registration with 422 saying to install the extra (its API process and its ingest children alike)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import io, json, sys
import torch
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings

settings = Settings(_env_file=None, data_dir=sys.argv[1])
out = {}
with TestClient(create_app(settings), raise_server_exceptions=False) as client:
    body = {"name": "tiny", "library": "transformers", "config": {"architectures": ["BertModel"]}}
    refused = client.post("/v1/architectures", json=body)
    out["register"] = [refused.status_code, refused.json()["error"]]
    out["list"] = client.get("/v1/architectures").status_code
    client.post("/v1/models", json={"name": "demo", "architecture": "simple-linear"})
    buffer = io.BytesIO()
    linear = torch.nn.Linear(10, 1)
    torch.save({"linear.weight": linear.weight.detach(), "linear.bias": linear.bias.detach()}, buffer)
    pushed = client.post("/v1/models/demo/versions", content=buffer.getvalue())
    out["push"] = pushed.status_code
out["imported"] = "transformers" in sys.modules and sys.modules["transformers"] is not None
print(json.dumps(out))
"""


def test_the_server_works_without_transformers(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    (blocker / "transformers").mkdir(parents=True)
    (blocker / "transformers" / "__init__.py").write_text(
        "raise ImportError('transformers is not installed')\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTVAULT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(root), str(root / "client")])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    status, error = out["register"]
    assert status == 422 and error["code"] == "invalid_architecture"
    assert "weightvault[transformers]" in error["message"]
    assert out["list"] == 200 and out["push"] == 201 and out["imported"] is False
