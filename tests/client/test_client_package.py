"""The client is its own distribution: it installs alone, imports next to a user's own ``app`` package,
and the server it talks to is not confused by one either."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.checkpoints import save, trained_simple_model
from tests.conftest import isolated_database
from tests.server import running_server, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _user_project(folder: Path, marker: Path) -> Path:
    """A training project laid out as FastAPI/Flask/Gradio projects are: its own ``app`` package and app.py."""
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('app package ran')\n")
    (folder / "app" / "__main__.py").write_text(f"open({str(marker)!r}, 'w').write('app main ran')\n")
    (folder / "app.py").write_text(f"open({str(marker)!r}, 'w').write('app.py ran')\n")
    return folder


def test_the_client_alone_in_a_fresh_venv_imports_and_works_next_to_an_app_package(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT / "client")],
        check=True,
        timeout=600,
    )
    marker = tmp_path / "user-code-ran"
    project = _user_project(tmp_path / "project", marker)
    with (
        isolated_database(tmp_path) as database_url,
        running_server(
            tmp_path / "data", database_url, tmp_path / "server.log", "--conversion-workers", "0"
        ) as url,
    ):
        httpx.post(
            f"{url}/v1/models", json={"name": "demo", "architecture": "simple-linear"}
        ).raise_for_status()
        script = textwrap.dedent(
            f"""
                import importlib.util, json
                from weightvault import Client
                with Client({url!r}, progress=False) as client:
                    names = [model.name for model in client.list_models()]
                missing = [m for m in ("fastapi", "sqlalchemy", "onnxruntime", "torch")
                           if importlib.util.find_spec(m) is None]
                print(json.dumps({{"models": names, "missing": missing}}))
                """
        )
        done = subprocess.run(
            [str(python), "-c", script], cwd=project, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.splitlines()[-1])
        assert result["models"] == ["demo"]
        assert result["missing"] == ["fastapi", "sqlalchemy", "onnxruntime", "torch"]
        cli = subprocess.run(
            [str(venv / "bin" / "weightvault"), "ls", "--url", url, "--json"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr
        assert [model["name"] for model in json.loads(cli.stdout)] == ["demo"]
        version = subprocess.run(
            [str(venv / "bin" / "weightvault"), "--version"], capture_output=True, text=True, timeout=60
        )
        assert version.stdout.startswith("weightvault ")
    assert not marker.exists(), marker.read_text()


def test_serve_started_from_a_folder_with_its_own_app_package_converts_a_model(tmp_path: Path) -> None:
    marker = tmp_path / "user-code-ran"
    project = _user_project(tmp_path / "project", marker)
    model, _optimizer = trained_simple_model()
    checkpoint = save(model.state_dict(), tmp_path / "sd.pt")
    with (
        isolated_database(tmp_path) as database_url,
        running_server(tmp_path / "data", database_url, tmp_path / "server.log", cwd=project) as url,
    ):
        wait_for(
            lambda: httpx.get(f"{url}/readyz").status_code == 200,
            timeout=120,
            what="the conversion worker to report in",
        )
        assert httpx.get(f"{url}/readyz").json()["checks"]["conversion_workers"] is True
        httpx.post(
            f"{url}/v1/models", json={"name": "demo", "architecture": "simple-linear"}
        ).raise_for_status()
        httpx.post(
            f"{url}/v1/models/demo/versions",
            content=checkpoint.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=120,
        ).raise_for_status()
        job = httpx.post(f"{url}/v1/models/demo/versions/1/onnx", json={}).json()

        def finished() -> bool:
            status = httpx.get(f"{url}/v1/jobs/{job['id']}").json()["status"]
            assert status != "failed"
            return status == "succeeded"

        wait_for(finished, timeout=180, what="the ONNX conversion")
    assert not marker.exists(), marker.read_text()


def test_a_conversion_worker_that_cannot_start_makes_readyz_say_so(tmp_path: Path) -> None:
    # A broken install, as the worker sees it: its interpreter exits before our code runs.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        'if b"--single" in open("/proc/self/cmdline", "rb").read().split(b"\\0"):\n'
        '    raise SystemExit("worker cannot start: simulated broken install")\n'
    )
    with (
        isolated_database(tmp_path) as database_url,
        running_server(tmp_path / "data", database_url, tmp_path / "server.log", PYTHONPATH=str(site)) as url,
    ):
        wait_for(
            lambda: "could not start" in (tmp_path / "server.log").read_text(),
            timeout=60,
            what="serve to report the failed worker",
        )
        ready = httpx.get(f"{url}/readyz")
        assert httpx.get(f"{url}/healthz").status_code == 200
    assert ready.status_code == 503
    assert ready.json()["error"]["details"]["checks"]["conversion_workers"] is False
