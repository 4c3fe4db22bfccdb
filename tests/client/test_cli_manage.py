"""The management commands (rm, search, meta, jobs, arch, cache, --version) and the CLI's advice, against a
real server: every message speaks CLI (the flag to add, the command to run), never HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.checkpoints import save, trained_simple_model
from tests.client.conftest import Server
from tests.server import free_port
from weightvault import cli, commands, manage

pytestmark = pytest.mark.slow


@pytest.fixture
def run(server: Server, cache_dir: Path) -> Any:
    app = cli.build()
    runner = CliRunner()
    env = {"WEIGHTVAULT_URL": server.url, "WEIGHTVAULT_CACHE": str(cache_dir), "COLUMNS": "200"}

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), env=env, input=input)

    return invoke


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def _json(result: Result) -> Any:
    return json.loads(_ok(result).stdout)


def _push(run: Any, name: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    model, _optimizer = trained_simple_model()
    path = save(model.state_dict(), tmp_path / f"{name}.pt")
    return _json(run("push", str(path), "-m", name, *extra, "--json"))  # type: ignore[no-any-return]


def test_version_prints_the_client_version(run: Any) -> None:
    assert _ok(run("--version")).stdout.startswith("weightvault ")


def test_a_typo_in_a_model_name_gets_close_matches_and_cli_advice(
    run: Any, name: str, tmp_path: Path
) -> None:
    _push(run, name, tmp_path, "--create", "--architecture", "simple-linear")
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    shown = run("show", typo)
    assert shown.exit_code == 1
    assert f"Did you mean '{name}'" in shown.stderr and "weightvault ls" in shown.stderr
    assert "POST" not in shown.stderr and "/v1/" not in shown.stderr
    # A push to a model that does not exist names the flags that create it.
    pushed = run("push", str(tmp_path / f"{name}.pt"), "-m", typo)
    assert pushed.exit_code == 1
    assert "--create --architecture" in pushed.stderr and "POST" not in pushed.stderr
    # A mistyped architecture gets the close ones.
    wrong_arch = run(
        "push", str(tmp_path / f"{name}.pt"), "-m", f"{name}-b", "--create", "--architecture", "simple-linaer"
    )
    assert (
        wrong_arch.exit_code == 1
        and "'simple-linear'" in wrong_arch.stderr
        and "weightvault arch ls" in wrong_arch.stderr
    )


def test_create_with_another_architecture_on_an_existing_model_is_refused_up_front(
    run: Any, name: str, tmp_path: Path
) -> None:
    _push(run, name, tmp_path, "--create", "--architecture", "simple-linear")
    again = run("push", str(tmp_path / f"{name}.pt"), "-m", name, "--create", "--architecture", "mlp")
    assert again.exit_code == 1
    assert "already exists with the architecture 'simple-linear'" in again.stderr
    assert len(_json(run("ls", name, "--json"))) == 1  # nothing was pushed


def test_search_meta_and_rm(run: Any, name: str, tmp_path: Path) -> None:
    _push(run, name, tmp_path, "--create", "--architecture", "simple-linear")
    _push(run, name, tmp_path, "--alias", "production")
    found = _json(run("search", name[2:8], "--architecture", "simple-linear", "--json"))
    assert [model["name"] for model in found] == [name]
    assert _json(run("search", name, "--architecture", "mlp", "--json")) == []

    model = _json(
        run("meta", "set", name, "--description", "the demo", "--metadata", '{"team": "a"}', "--json")
    )
    assert (model["description"], model["metadata"]) == ("the demo", {"team": "a"})
    version = _json(run("meta", "set", f"{name}:1", "--description", "first try", "--json"))
    assert version["description"] == "first try"
    bad = run("meta", "set", name, "--metadata", "[1, 2]")
    assert bad.exit_code == 2 and "JSON object" in bad.stderr

    refused = run("rm", f"{name}@production")
    assert refused.exit_code == 1
    assert "production" in refused.stderr and "--force" in refused.stderr and "alias set" in refused.stderr
    assert [v["version"] for v in _json(run("ls", name, "--json"))] == [1, 2]
    _ok(run("rm", f"{name}:2", "--force"))
    assert [v["version"] for v in _json(run("ls", name, "--json"))] == [1]
    assert _json(run("show", name, "--json"))["aliases"] == {}

    kept = run("rm", name, input="n\n")
    assert kept.exit_code == 1 and len(_json(run("ls", name, "--json"))) == 1
    _ok(run("rm", name, "--yes"))
    gone = run("show", name)
    assert gone.exit_code == 1 and "There is no model" in gone.stderr


def test_arch_and_jobs(run: Any, name: str, tmp_path: Path) -> None:
    names = [arch["name"] for arch in _json(run("arch", "ls", "--json"))]
    assert "simple-linear" in names and "mlp" in names
    shown = _ok(run("arch", "show", "simple-linear"))
    assert "input" in shown.stdout
    missing = run("arch", "show", "simple-linaer")
    assert missing.exit_code == 1 and "'simple-linear'" in missing.stderr

    _push(run, name, tmp_path, "--create", "--architecture", "simple-linear")
    converted = _json(run("convert", name, "--wait", "--json"))
    job_id = converted["job"]["id"] if "job" in converted else converted["id"]
    listed = _json(run("jobs", "ls", "--model", name, "--json"))
    assert [job["id"] for job in listed] == [job_id]
    assert _json(run("jobs", "show", job_id, "--json"))["status"] == "succeeded"
    assert job_id in _ok(run("jobs", "ls", "--model", name)).stdout


def test_cache_ls_and_prune(run: Any, name: str, tmp_path: Path, cache_dir: Path) -> None:
    _push(run, name, tmp_path, "--create", "--architecture", "simple-linear")
    _ok(run("pull", name, "-o", str(tmp_path / "w.safetensors")))
    _ok(run("pull", name, "--kind", "full", "-o", str(tmp_path / "full.pt")))
    entries = _json(run("cache", "ls", "--json"))
    assert len(entries) == 2 and all(entry["complete"] for entry in entries)
    # pull -o placed the file once: the output is a hard link to the cached blob
    assert (tmp_path / "w.safetensors").stat().st_nlink == 2
    assert _json(run("cache", "prune", "--older-than", "1", "--json"))["removed"] == 0
    pruned = _json(run("cache", "prune", "--json"))
    assert pruned["removed"] == 2 and pruned["bytes"] == sum(entry["size"] for entry in entries)
    assert _json(run("cache", "ls", "--json")) == []
    assert (tmp_path / "w.safetensors").is_file()  # the user's copy stays


def test_an_unreachable_url_fails_within_seconds_and_says_how_to_change_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "weightvault", "ls", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 3
    assert url in done.stderr and "--url" in done.stderr and "WEIGHTVAULT_URL" in done.stderr
    assert "WEIGHTVAULT_CONNECT_RETRY" in done.stderr
    assert "retrying" not in done.stderr  # no waiting unless WEIGHTVAULT_CONNECT_RETRY asks for it


# A group's subcommand to show: its help is what a user reads.
_SUBCOMMAND = {"alias": "set", "meta": "set", "jobs": "show", "arch": "show", "cache": "ls"}


@pytest.mark.parametrize("name", [*commands.COMMAND_NAMES, *manage.COMMAND_NAMES])
def test_a_command_built_alone_reads_as_in_the_whole_cli(name: str) -> None:
    # `weightvault <command>` builds only that command (start-up time); its help, usage and errors must
    # be those of the whole command.
    runner, env = CliRunner(), {"COLUMNS": "200"}
    alone = cli.build(plugins=False, only=name)
    whole = cli.build(plugins=False)
    assert len(alone.registered_commands) + len(alone.registered_groups) == 1
    args = [name, *([_SUBCOMMAND[name]] if name in _SUBCOMMAND else [])]
    for extra in (["--help"], ["--no-such-option"]):
        got = runner.invoke(alone, [*args, *extra], env=env)
        expected = runner.invoke(whole, [*args, *extra], env=env)
        assert (got.exit_code, got.stdout, got.stderr) == (
            expected.exit_code,
            expected.stdout,
            expected.stderr,
        )
        assert got.exit_code in (0, 2) and "Usage: " in got.stdout + got.stderr


def test_the_command_line_names_close_matches_for_a_mistyped_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "weightvault", "pul", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 2 and "Did you mean 'pull'" in done.stderr
