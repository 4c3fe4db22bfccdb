"""Run `weightvault serve` as a real process for tests that need one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import TEST_ARCHITECTURES

STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTVAULT_")}
    env.update(
        WEIGHTVAULT_DATA_DIR=str(data_dir),
        WEIGHTVAULT_DATABASE_URL=database_url,
        WEIGHTVAULT_ARCHITECTURE_MODULES=TEST_ARCHITECTURES,
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    env.update(extra)
    return env


@contextmanager
def running_server(
    data_dir: Path, database_url: str, log: Path, *args: str, cwd: Path | None = None, **env: str
) -> Iterator[str]:
    """Start the server, wait until /healthz answers, yield its base URL, stop it with SIGTERM.

    With ``cwd`` it is started as a user would, by the ``weightvault`` command from that folder.
    """
    port = free_port()
    command = (
        [str(Path(sys.executable).parent / "weightvault")]
        if cwd is not None
        else [sys.executable, "-m", "app"]
    )
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [*command, "serve", "--port", str(port), *args],
            cwd=cwd,
            env=server_env(data_dir, database_url, **env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_worker(
    data_dir: Path, database_url: str, log: Path, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """One `weightvault worker --single` process; killed (if still alive) on exit."""
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "--single"],
            env=server_env(data_dir, database_url, **env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(predicate: object, timeout: float, interval: float = 0.3, what: str = "condition") -> object:
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
