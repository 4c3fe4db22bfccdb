"""Workload 5: the peer, MLflow's tracking server with --serve-artifacts, in its own venv
(benchmarks/.venv-mlflow, made by setup_mlflow.sh on first use).

On the download-size state_dict file: the bare artifact PUT and GET through the artifact proxy
(/api/2.0/mlflow-artifacts/artifacts/...), with the same client as weightvault; then metadata reads
equivalent to weightvault's (registered-models/get and model-versions/get, alternating) at the same
client counts, over MLflow's SQLite backend. MLflow runs as shipped (its default worker count).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse
from pathlib import Path

from benchmarks import rawhttp, servers
from benchmarks.context import Context, expect, say, settle
from benchmarks.data import size_key, size_label
from benchmarks.memory import tree_rss
from benchmarks.workloads.metadata import measure

MiB = 1024**2
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
IDLE_SECONDS = 5.0
SETUP = Path(__file__).resolve().parent.parent / "setup_mlflow.sh"
SETUP_TIMEOUT_SECONDS = 1800


def _install(ctx: Context) -> None:
    """The benchmark's own setup: MLflow into its own venv, never into the project's."""
    say(f"installing MLflow into {ctx.mlflow_venv} (benchmarks/setup_mlflow.sh)")
    started = time.perf_counter()
    subprocess.run(
        ["bash", str(SETUP)],
        env={**os.environ, "MLFLOW_VENV": str(ctx.mlflow_venv)},
        stdout=subprocess.DEVNULL,
        timeout=SETUP_TIMEOUT_SECONDS,
        check=True,
    )
    ctx.results.context["mlflow_setup_seconds"] = round(time.perf_counter() - started, 1)


def run(ctx: Context) -> None:
    if servers.mlflow_binary(ctx.mlflow_venv) is None:
        _install(ctx)
    size = ctx.download_size
    key, label = size_key(size), size_label(size)
    file, _config = ctx.inputs.sized(size)
    add = ctx.results.add
    with servers.mlflow(ctx.tmp, ctx.mlflow_venv) as ml:
        time.sleep(IDLE_SECONDS)
        count, rss = tree_rss(ml.process.pid)
        add("mlflow/idle/processes", count, unit="", label="MLflow server: processes")
        add(
            "mlflow/idle/rss_mib",
            rss / MiB,
            unit="MiB",
            label="MLflow server: idle VmRSS summed over its processes",
        )
        small, _ = ctx.inputs.arch("simple-linear", seed=0)
        warm = f"{ARTIFACTS}/bench/warm-up/{small.name}"
        expect(rawhttp.upload_raw(ml.url, warm, small, method="PUT"), 200, "MLflow warm-up PUT")
        expect(rawhttp.download(ml.url, warm), 200, "MLflow warm-up GET")
        for repeat in range(ctx.repeats):
            say(f"mlflow {label}: repeat {repeat + 1}/{ctx.repeats}")
            stored = f"{ARTIFACTS}/bench/r{repeat}/{file.name}"
            settle()
            reply = expect(rawhttp.upload_raw(ml.url, stored, file, method="PUT"), 200, "MLflow artifact PUT")
            add(
                f"mlflow/{key}/put/seconds",
                reply.seconds,
                unit="s",
                label=f"mlflow {label}: bare artifact PUT (--serve-artifacts)",
            )
            reply = expect(rawhttp.download(ml.url, stored), 200, "MLflow artifact GET")
            if reply.body_bytes != file.stat().st_size:
                raise RuntimeError(f"MLflow returned {reply.body_bytes} bytes of {file.stat().st_size}")
            add(f"mlflow/{key}/get/seconds", reply.seconds, unit="s", label=f"mlflow {label}: artifact GET")
            expect(rawhttp.request(ml.url, "DELETE", stored), 200, "MLflow artifact DELETE")

        # A model version must name the run whose artifacts hold it.
        run = expect(
            rawhttp.json_request(ml.url, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": "0"}),
            200,
            "MLflow create run",
        ).json()["run"]["info"]
        name = "meta"
        expect(
            rawhttp.json_request(ml.url, "POST", "/api/2.0/mlflow/registered-models/create", {"name": name}),
            200,
            "MLflow create registered model",
        )
        version = {"name": name, "source": f"{run['artifact_uri']}/model", "run_id": run["run_id"]}
        expect(
            rawhttp.json_request(ml.url, "POST", "/api/2.0/mlflow/model-versions/create", version),
            200,
            "MLflow create model version",
        )
        paths = [
            f"/api/2.0/mlflow/registered-models/get?name={urllib.parse.quote(name)}",
            f"/api/2.0/mlflow/model-versions/get?name={urllib.parse.quote(name)}&version=1",
        ]
        for path in paths:
            expect(rawhttp.request(ml.url, "GET", path), 200, f"MLflow {path}")
        measure(ctx, ml, paths, "mlflow/metadata", "metadata MLflow (SQLite)")
