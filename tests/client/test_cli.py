"""The client commands against a real server process: through typer's CliRunner, and as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner, Result

from tests.checkpoints import save, trained_simple_model
from tests.client.conftest import Server
from tests.server import free_port
from weightvault.cache import Cache
from weightvault.commands import register

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(server: Server, cache_dir: Path) -> Any:
    cli = typer.Typer()
    register(cli)
    runner = CliRunner()
    env = {"WEIGHTVAULT_URL": server.url, "WEIGHTVAULT_CACHE": str(cache_dir), "COLUMNS": "200"}

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), env=env)

    return invoke


def _json(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def _checkpoint(tmp_path: Path) -> Path:
    model, optimizer = trained_simple_model()
    ckpt = {
        "epoch": 4,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
    }
    return save(ckpt, tmp_path / "checkpoint.pt")


def test_push_ls_show_alias_and_pull(run: Any, name: str, tmp_path: Path) -> None:
    pushed = _json(
        run(
            "push", str(_checkpoint(tmp_path)), "--model", name, "--create", "--architecture", "simple-linear",
            "--metadata", '{"acc": 0.98}', "--json",
        )
    )  # fmt: skip
    assert (pushed["version"], pushed["training"]["epoch"], pushed["metadata"]) == (1, 4, {"acc": 0.98})
    text = run("push", str(tmp_path / "checkpoint.pt"), "-m", name, "--alias", "staging")
    assert text.exit_code == 0 and f"pushed {name}:2" in text.stdout and "staging -> 2" in text.stdout

    assert name in [m["name"] for m in _json(run("ls", "--json"))]
    table = run("ls")
    assert table.exit_code == 0 and name in table.stdout and "simple-linear" in table.stdout
    assert "MODEL" in table.stdout and "staging=2" in table.stdout
    versions = run("ls", name)
    assert (
        versions.exit_code == 0 and "training_checkpoint" in versions.stdout and "staging" in versions.stdout
    )
    assert [v["version"] for v in _json(run("ls", name, "--json"))] == [1, 2]

    shown = _json(run("show", f"{name}:1", "--json"))
    assert shown["source"]["sha256"] == pushed["source"]["sha256"]
    details = run("show", f"{name}:1")
    assert details.exit_code == 0 and all(a["sha256"] in details.stdout for a in pushed["artifacts"])
    assert _json(run("show", name, "--json"))["aliases"] == {"staging": 2}

    assert _json(run("alias", "set", name, "production", "1", "--json"))["aliases"] == {
        "production": 1,
        "staging": 2,
    }
    assert _json(run("show", f"{name}@production", "--json"))["version"] == 1
    assert run("alias", "rm", name, "production").exit_code == 0
    gone = run("show", f"{name}@production", "--json")
    assert gone.exit_code == 1 and json.loads(gone.stdout)["error"]["code"] == "version_not_found"
    assert "version_not_found" in gone.stderr

    first = _json(run("pull", f"{name}@latest", "-o", str(tmp_path / "w.safetensors"), "--json"))
    second = _json(run("pull", f"{name}@latest", "-o", str(tmp_path / "w2.safetensors"), "--json"))
    assert not first["from_cache"] and second["from_cache"] and second["transferred"] == 0
    assert (first["verified_by"], second["verified_by"]) == (
        "crc32",
        None,
    )  # the server's CRC, then the cache
    assert (tmp_path / "w.safetensors").read_bytes() == (tmp_path / "w2.safetensors").read_bytes()
    (tmp_path / "out").mkdir()
    full = run("pull", f"{name}:1", "--kind", "full", "-o", str(tmp_path / "out"))
    assert full.exit_code == 0 and "downloaded" in full.stdout
    loaded = torch.load(tmp_path / "out" / f"{name}-v1-full.pt", weights_only=True)
    assert loaded["epoch"] == 4
    pt = _json(
        run(
            "pull", f"{name}:1", "--format", "pt", "--verify", "sha256", "-o", str(tmp_path / "out"), "--json"
        )
    )
    assert pt["verified_by"] == "sha256" and (tmp_path / "out" / f"{name}-v1-weights.pt").is_file()
    assert run("pull", name, "--verify", "md5").exit_code == 2

    no_onnx = run("pull", f"{name}:1", "--kind", "onnx", "--json")
    assert no_onnx.exit_code == 1 and json.loads(no_onnx.stdout)["error"]["code"] == "artifact_not_found"


def test_convert_waits_downloads_and_exits_4_when_conversion_fails(
    run: Any, name: str, tmp_path: Path, cache_dir: Path
) -> None:
    assert (
        run(
            "push", str(_checkpoint(tmp_path)), "-m", name, "--create", "--architecture", "simple-linear"
        ).exit_code
        == 0
    )
    queued = _json(run("convert", f"{name}:1", "--json"))
    assert queued["status"] in ("queued", "running", "succeeded") and queued["path"] is None
    done = _json(run("convert", name, "--wait", "-o", str(tmp_path / "demo.onnx"), "--json"))
    assert done["status"] == "succeeded" and done["id"] == queued["id"]
    assert Path(done["path"]).read_bytes() == (tmp_path / "demo.onnx").read_bytes() != b""
    # Checked by the server's CRC by default: the cache marks the file as trusted for that server only.
    marker = Cache(cache_dir).origin_marker(done["artifact"]["sha256"])
    assert marker.is_file()
    # --verify sha256 hashes it (from the cache here) and then trusts it for every server.
    again = _json(run("convert", name, "-o", str(tmp_path / "again.onnx"), "--verify", "sha256", "--json"))
    assert (tmp_path / "again.onnx").read_bytes() == (tmp_path / "demo.onnx").read_bytes()
    assert again["id"] == done["id"] and not marker.exists()
    md5 = run("convert", name, "-o", str(tmp_path / "x.onnx"), "--verify", "md5")
    assert md5.exit_code == 2 and "'md5' is not one of" in md5.stderr
    shown = run("convert", name, "--wait").stdout
    assert "succeeded" in shown
    # The signature to feed the file with, from the job's report: names, dtypes, the dynamic batch.
    inputs = next(line for line in shown.splitlines() if line.strip().startswith("inputs:"))
    report_input = done["report"]["inputs"][0]
    assert report_input["name"] in inputs and report_input["dtype"] in inputs and "batch" in inputs
    assert any(line.strip().startswith("outputs:") for line in shown.splitlines())
    assert "checked:" in shown

    broken = f"{name}-bessel"
    sd = {"linear.weight": torch.eye(4), "linear.bias": torch.zeros(4)}
    path = save(sd, tmp_path / "bessel.pt")
    assert run("push", str(path), "-m", broken, "--create", "--architecture", "bessel").exit_code == 0
    failed = run("convert", broken, "--wait", "--json")
    assert failed.exit_code == 4, failed.stdout
    assert json.loads(failed.stdout)["error"]["code"]


def test_usage_errors_exit_2_and_refusals_exit_1(run: Any, name: str, tmp_path: Path) -> None:
    assert run("pull", "Not:A:Ref").exit_code == 2
    assert run("show", "mnist:production").exit_code == 2
    assert run("push", str(tmp_path / "missing.pt"), "-m", name).exit_code == 2
    assert run("push", str(_checkpoint(tmp_path)), "-m", name, "--create").exit_code == 2
    bad_config = run("push", str(tmp_path / "checkpoint.pt"), "-m", name, "--create", "--architecture", "mlp",
                     "--config", "{not json")  # fmt: skip
    assert bad_config.exit_code == 2
    assert run("pull", name, "--kind", "zip").exit_code == 2

    missing = run("show", f"{name}:1")
    assert missing.exit_code == 1 and "model_not_found" in missing.stderr
    refused = run(
        "push", str(tmp_path / "checkpoint.pt"), "-m", name, "--create", "--architecture", "nope", "--json"
    )
    assert refused.exit_code == 1 and json.loads(refused.stdout)["error"]["code"] == "architecture_not_found"


def _subprocess(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightvault", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("WEIGHTVAULT_")}, **env},
    )


def test_real_processes_are_quiet_when_piped_and_exit_3_without_a_server(
    server: Server, name: str, tmp_path: Path, cache_dir: Path
) -> None:
    env = {"WEIGHTVAULT_URL": server.url, "WEIGHTVAULT_CACHE": str(cache_dir)}
    pushed = _subprocess(
        "push",
        str(_checkpoint(tmp_path)),
        "--model",
        name,
        "--create",
        "--architecture",
        "simple-linear",
        env=env,
    )
    assert pushed.returncode == 0 and pushed.stderr == "", pushed.stderr
    pulled = _subprocess("pull", name, "-o", str(tmp_path / "w.safetensors"), env=env)
    assert pulled.returncode == 0 and pulled.stderr == "" and (tmp_path / "w.safetensors").is_file()

    nowhere = f"http://127.0.0.1:{free_port()}"
    down = _subprocess("ls", "--json", env={"WEIGHTVAULT_URL": nowhere, "WEIGHTVAULT_CONNECT_RETRY": "0"})
    assert down.returncode == 3
    assert json.loads(down.stdout)["error"]["code"] == "connection_failed"
    assert nowhere in down.stderr


def test_register_adds_the_commands_to_weightvault_without_clashes() -> None:
    script = """
import json
import typer.main
from app.cli.main import cli
from weightvault.commands import register

names = lambda: set(typer.main.get_command(cli).commands)
before = names()
if not {"push", "pull", "ls", "show", "convert", "alias"} <= before:  # not wired into app/cli/main.py yet
    register(cli)
print(json.dumps({"before": sorted(before), "after": sorted(names())}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT, timeout=120
    )
    result = json.loads(done.stdout.splitlines()[-1])
    ours = {"push", "pull", "ls", "show", "convert", "alias"}
    assert ours <= set(result["after"])
    assert set(result["after"]) - ours == set(result["before"]) - ours  # nothing of the server's replaced
    assert ours <= set(result["before"]) or not ours & set(result["before"])
