"""What every workload gets: the run's settings, a temp dir, its inputs (made once, lazily) and the results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import rawhttp
from benchmarks.data import size_key
from benchmarks.results import Results
from benchmarks.servers import Running, base_env


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_child(command: list[str], *, timeout: float, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a harness child (python -m benchmarks.x ...); its stdout, or an error with its output."""
    done = subprocess.run(
        command,
        env=env if env is not None else base_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


class Inputs:
    """Checkpoint files under the temp dir, each made once by a child process."""

    def __init__(self, root: Path) -> None:
        self.root = root / "inputs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, tuple[Path, dict[str, Any]]] = {}

    def _make(self, key: str, path: Path, args: list[str], timeout: float) -> tuple[Path, dict[str, Any]]:
        if key not in self._made:
            started = time.perf_counter()
            out = run_child([sys.executable, "-m", "benchmarks.data", *args], timeout=timeout, cwd=self.root)
            config = json.loads(out.strip().splitlines()[-1])
            say(
                f"made {path.name} ({path.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - started:.1f}s"
            )
            self._made[key] = (path, config)
        return self._made[key]

    def sized(self, size: int) -> tuple[Path, dict[str, Any]]:
        """A state_dict file of ``size`` bytes of float32 weights (mlp) and its model config."""
        path = self.root / f"state_dict-{size_key(size)}.pt"
        return self._make(f"size-{size}", path, ["size", str(size), str(path)], timeout=1800)

    def arch(self, name: str, seed: int) -> tuple[Path, dict[str, Any]]:
        path = self.root / f"{name}-seed{seed}.pt"
        return self._make(f"arch-{name}-{seed}", path, ["arch", name, str(path), "--seed", str(seed)], 300)

    def drop(self, path: Path) -> None:
        """Delete a big input once no workload needs it any more (keeps the temp dir's footprint down)."""
        for key, (made, _config) in list(self._made.items()):
            if made == path:
                del self._made[key]
        path.unlink(missing_ok=True)


@dataclass
class Context:
    tmp: Path
    sizes: list[int]
    download_size: int
    repeats: int
    onnx_archs: list[str]
    metadata_clients: list[int]
    metadata_seconds: float
    metadata_databases: list[str]
    mlflow_venv: Path
    results: Results
    inputs: Inputs = field(init=False)

    def __post_init__(self) -> None:
        self.inputs = Inputs(self.tmp)

    @property
    def python(self) -> str:
        return sys.executable


def settle() -> None:
    """Flush dirty pages before a timed step, so one step's writeback is not billed to the next."""
    os.sync()


def expect(reply: rawhttp.Reply, status: int, what: str) -> rawhttp.Reply:
    if reply.status != status:
        raise RuntimeError(f"{what}: HTTP {reply.status}, expected {status}: {reply.body[:500]!r}")
    return reply


def create_model(server: Running, name: str, architecture: str, config: dict[str, Any]) -> None:
    payload = {"name": name, "architecture": architecture, "config": config}
    expect(rawhttp.json_request(server.url, "POST", "/v1/models", payload), 201, f"create model {name}")


def delete_version(server: Running, model: str, version: dict[str, Any]) -> None:
    """Delete a version and every file only it used, at once, so the next repeat stores (and fsyncs)
    everything anew.

    The service keeps unreferenced blobs for a grace period (an upload may be claiming them); a
    benchmark repeat re-uploading the same bytes would otherwise find them stored (whole files, recipes
    and tensor blobs alike) and skip work. ``gc --grace-seconds 0`` frees exactly what no version reads.
    """
    number = version["version"]
    expect(
        rawhttp.request(server.url, "DELETE", f"/v1/models/{model}/versions/{number}"), 204, "delete version"
    )
    assert server.env is not None and server.data_dir is not None
    run_child(
        [sys.executable, "-m", "app", "gc", "--grace-seconds", "0"],
        timeout=600,
        cwd=server.data_dir.parent,
        env=server.env,
    )


def warm_up(ctx: Context, server: Running) -> None:
    """One small raw and one multipart upload, so first-use costs (lazy imports, first forward) are paid
    before anything is timed."""
    weights, config = ctx.inputs.arch("simple-linear", seed=0)
    create_model(server, "warm-up", "simple-linear", config)
    for send in (rawhttp.upload_raw, rawhttp.upload_multipart):
        version = expect(
            send(server.url, "/v1/models/warm-up/versions", weights), 201, "warm-up upload"
        ).json()
        delete_version(server, "warm-up", version)
