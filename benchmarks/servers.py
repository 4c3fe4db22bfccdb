"""Start and stop the servers under test, each in its own process group, each stopped by whoever started it.

weightvault (``python -m app serve``), the floor endpoint, nginx and MLflow's tracking server. Every
one binds 127.0.0.1 on a free port and logs to a file in the run's temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from benchmarks import rawhttp
from benchmarks.memory import tree_pids

REPO = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 30.0


@dataclass
class Running:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    pid: int  # the process that serves HTTP: the one to sample
    data_dir: Path | None = None  # weightvault's
    env: dict[str, str] | None = None  # weightvault's: what its maintenance commands need too

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(*, repo_importable: bool = True, **extra: str) -> dict[str, str]:
    """The harness's environment without weightvault or MLflow settings (and this repo importable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEIGHTVAULT_", "MLFLOW_"))}
    if repo_importable:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def _answers(url: str, path: str) -> bool:
    try:
        return rawhttp.request(url, "GET", path, timeout=2).status < 500
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def listening_pid(root: int, port: int) -> int:
    """The process in ``root``'s tree that holds the listening socket (the deepest, if several)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    owner = root
    for pid in tree_pids(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    owner = pid
                    break
            except OSError:
                continue
    return owner


def stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the leader, wait, then SIGKILL whatever is left of its own process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    deadline = time.monotonic() + 5
    # The group id is the leader's pid (start_new_session); stragglers are its own children.
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def started(
    name: str,
    command: list[str],
    *,
    port: int,
    log: Path,
    ready: Callable[[str], bool],
    env: dict[str, str],
    cwd: Path,
    timeout: float = 120.0,
) -> Iterator[Running]:
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready(url):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {timeout:g}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Running(name=name, url=url, process=process, log=log, pid=listening_pid(process.pid, port))
    finally:
        stop(process)


@contextmanager
def weightvault(
    workdir: Path,
    *,
    database_url: str | None = None,
    conversion_workers: int = 0,
    tag: str = "wv",
    api_workers: int = 1,
) -> Iterator[Running]:
    """``python -m app serve --workers api_workers`` with a fresh data dir under ``workdir``, auth off."""
    data_dir = workdir / f"{tag}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = base_env(WEIGHTVAULT_DATA_DIR=str(data_dir), WEIGHTVAULT_AUTH="off")
    if database_url:
        env["WEIGHTVAULT_DATABASE_URL"] = database_url
    port = free_port()
    command = [sys.executable, "-m", "app", "serve", "--port", str(port)]
    command += ["--conversion-workers", str(conversion_workers), "--workers", str(api_workers)]
    with started(
        "weightvault",
        command,
        port=port,
        log=workdir / f"{tag}.log",
        ready=lambda url: _answers(url, "/healthz"),
        env=env,
        cwd=workdir,  # not the repo: its .env must not leak in
    ) as running:
        running.data_dir, running.env = data_dir, env
        yield running


@contextmanager
def floor(workdir: Path) -> Iterator[Running]:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.floor_server", "--port", str(port)]
    command += ["--dir", str(workdir / "floor-data")]
    with started(
        "floor",
        command,
        port=port,
        log=workdir / "floor.log",
        ready=lambda url: _answers(url, "/healthz"),
        env=base_env(),
        cwd=workdir,
    ) as running:
        yield running


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
user root;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


@contextmanager
def nginx(workdir: Path, root: Path) -> Iterator[Running]:
    """nginx (sendfile on, one worker) serving ``root`` on loopback."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
    conf_dir = workdir / "nginx"
    conf_dir.mkdir(exist_ok=True)
    port = free_port()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=conf_dir, port=port, root=root))
    command = [binary, "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "nginx-error.log")]
    with started(
        "nginx",
        command,
        port=port,
        log=conf_dir / "nginx.out",
        ready=lambda url: _answers(url, "/"),
        env=base_env(repo_importable=False),
        cwd=conf_dir,
        timeout=30,
    ) as running:
        yield running


def mlflow_binary(venv: Path) -> Path | None:
    path = venv / "bin" / "mlflow"
    return path if path.exists() else None


@contextmanager
def mlflow(workdir: Path, venv: Path) -> Iterator[Running]:
    """MLflow's tracking server as shipped (its default workers), SQLite backend, --serve-artifacts."""
    binary = mlflow_binary(venv)
    if binary is None:
        raise RuntimeError(f"MLflow is not installed in {venv} (run benchmarks/setup_mlflow.sh)")
    home = workdir / "mlflow"
    home.mkdir(exist_ok=True)
    port = free_port()
    command = [str(binary), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{home}/mlflow.db", "--serve-artifacts"]
    command += ["--artifacts-destination", str(home / "artifacts")]
    with started(
        "mlflow",
        command,
        port=port,
        log=home / "mlflow.log",
        ready=lambda url: _answers(url, "/health"),
        env=base_env(repo_importable=False),
        cwd=home,
        timeout=300,
    ) as running:
        yield running
