"""Tokens from --token / $WEIGHTVAULT_TOKEN against a server with auth on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.checkpoints import SimpleModel, save
from tests.server import running_server, server_env
from weightvault import Client, Forbidden, Unauthorized
from weightvault.commands import register

pytestmark = pytest.mark.slow


def _token(data_dir: Path, database_url: str, scope: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app", "token", "create", "--scope", scope],
        env=server_env(data_dir, database_url, WEIGHTVAULT_AUTH="on"),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip().splitlines()[-1]


def test_the_client_and_the_commands_send_the_token(
    tmp_path: Path, data_dir: Path, database_url: str
) -> None:
    with running_server(
        data_dir, database_url, tmp_path / "server.log", "--conversion-workers", "0", WEIGHTVAULT_AUTH="on"
    ) as url:
        write, read = _token(data_dir, database_url, "write"), _token(data_dir, database_url, "read")
        cache = tmp_path / "cache"
        with Client(url, token=write, cache_dir=cache, progress=False) as writer:
            writer.create_model("demo", "simple-linear")
            writer.push("demo", SimpleModel().state_dict())
        with Client(url, token=read, cache_dir=cache, progress=False) as reader:
            assert reader.load_weights("demo").keys() == {"linear.weight", "linear.bias"}
            with pytest.raises(Forbidden) as too_small:
                reader.push("demo", SimpleModel().state_dict())
            assert too_small.value.status == 403
        with Client(url, token="", cache_dir=cache, progress=False) as anonymous, pytest.raises(Unauthorized):
            anonymous.list_models()

        cli = typer.Typer()
        register(cli)
        env: dict[str, str | None] = {
            "WEIGHTVAULT_URL": url,
            "WEIGHTVAULT_CACHE": str(cache),
            "WEIGHTVAULT_TOKEN": None,
        }
        path = str(save(SimpleModel().state_dict(), tmp_path / "sd.pt"))
        runner = CliRunner()
        pushed = runner.invoke(
            cli, ["push", path, "-m", "demo", "--json"], env={**env, "WEIGHTVAULT_TOKEN": write}
        )
        assert pushed.exit_code == 0 and json.loads(pushed.stdout)["version"] == 2
        listed = runner.invoke(cli, ["ls", "--token", read, "--json"], env=env)
        assert listed.exit_code == 0 and [m["name"] for m in json.loads(listed.stdout)] == ["demo"]
        refused = runner.invoke(cli, ["ls", "--json"], env=env)
        assert refused.exit_code == 1 and json.loads(refused.stdout)["error"]["code"] == "unauthorized"
