"""One real `weightvault serve` process (with a conversion worker) shared by the client's end-to-end tests;
each test uses its own model names and its own cache directory."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.conftest import isolated_database
from tests.server import running_server
from weightvault import Client, cli


@dataclass(frozen=True)
class Server:
    url: str
    log: Path

    def statuses(self, path: str, count: int) -> list[int]:
        """The status codes of the logged requests whose path contains ``path``, oldest first; waits a little
        for ``count`` of them, as a request is logged just after its response went out."""
        deadline = time.monotonic() + 10
        while len(found := self._statuses(path)) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return found

    def _statuses(self, path: str) -> list[int]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if path not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):  # the server's JSON access log
                if record.get("logger") == "weightvault.access" and isinstance(record.get("status"), int):
                    found.append(record["status"])
            elif match := re.search(r'HTTP/[0-9.]+" ([0-9]{3})', line):  # uvicorn's access log
                found.append(int(match.group(1)))
        return found


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("client-server")
    log = root / "server.log"
    with (
        isolated_database(root) as database_url,
        running_server(root / "data", database_url, log, "--conversion-workers", "1") as url,
    ):
        yield Server(url, log)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def wv(server: Server, cache_dir: Path) -> Iterator[Client]:
    with Client(server.url, cache_dir=cache_dir, progress=False, connect_retry=0) as wv:
        yield wv


@pytest.fixture
def name() -> str:
    """A model name no other test uses."""
    return f"m-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def run(server: Server, cache_dir: Path) -> Any:
    """The weightvault command, in-process, against the shared server: ``run("ls")``."""
    app = cli.build()
    runner = CliRunner()
    env = {"WEIGHTVAULT_URL": server.url, "WEIGHTVAULT_CACHE": str(cache_dir), "COLUMNS": "200"}

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke
