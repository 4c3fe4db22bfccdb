"""Workload 3: ONNX conversion through the service against a fresh ``python -c`` export + check script.

The server runs one supervised conversion worker; timing starts once the worker logged that it is warm.
Each repeat uploads freshly seeded weights as a new version, so the service's conversion cache (same
weights, same options) never answers instead of a real export. Service time: POST .../onnx until GET
/v1/jobs/{id} says succeeded (polled every 50 ms; the worker itself polls the queue every second).
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from typing import Any

from benchmarks import onnx_script, rawhttp, servers
from benchmarks.context import Context, create_model, expect, say
from benchmarks.servers import Running, base_env

WARM_TIMEOUT_SECONDS = 300.0
JOB_TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 0.05


def _wait_warm(server: Running) -> None:
    deadline = time.monotonic() + WARM_TIMEOUT_SECONDS
    while "warm in" not in server.log_tail(200_000):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the conversion worker did not warm up:\n{server.log_tail()}")
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{server.log_tail()}")
        time.sleep(0.2)


def _convert(server: Running, model: str, version: int) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    reply = expect(
        rawhttp.json_request(server.url, "POST", f"/v1/models/{model}/versions/{version}/onnx", {}),
        202,
        "submit",
    )
    job_id = reply.json()["id"]
    deadline = started + JOB_TIMEOUT_SECONDS
    while True:
        job = expect(rawhttp.request(server.url, "GET", f"/v1/jobs/{job_id}"), 200, "poll job").json()
        if job["status"] in ("succeeded", "failed"):
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"job {job_id} still {job['status']} after {JOB_TIMEOUT_SECONDS:g}s")
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} failed: {job['error']}")
    if "cached_from_job" in (job.get("report") or {}):
        raise RuntimeError(f"job {job_id} was answered from the conversion cache; the timing would be wrong")
    return seconds, job


def _seconds_between(start: object, end: object) -> float | None:
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run(ctx: Context) -> None:
    add = ctx.results.add
    with servers.weightvault(ctx.tmp, tag="onnx", conversion_workers=1) as wv:
        _wait_warm(wv)
        for arch in ctx.onnx_archs:
            model = f"onnx-{arch}"
            created = False
            for repeat in range(ctx.repeats):
                say(f"onnx {arch}: repeat {repeat + 1}/{ctx.repeats}")
                weights, config = ctx.inputs.arch(arch, seed=repeat)
                if not created:
                    create_model(wv, model, arch, config)
                    created = True
                version = expect(
                    rawhttp.upload_raw(wv.url, f"/v1/models/{model}/versions", weights), 201, "upload"
                ).json()["version"]
                seconds, job = _convert(wv, model, version)
                add(
                    f"onnx/{arch}/service/seconds",
                    seconds,
                    unit="s",
                    label=f"onnx {arch}: weightvault submit -> succeeded",
                )
                queued = _seconds_between(job.get("created_at"), job.get("started_at"))
                if queued is not None:
                    add(
                        f"onnx/{arch}/service_queued/seconds",
                        queued,
                        unit="s",
                        label=f"onnx {arch}: of which queued until a worker claimed it",
                    )
                report = job.get("report") or {}
                if "export_seconds" in report:
                    add(
                        f"onnx/{arch}/service_export/seconds",
                        float(report["export_seconds"]),
                        unit="s",
                        label=f"onnx {arch}: of which the exporter (job report)",
                    )

                out = ctx.tmp / f"script-{arch}.onnx"
                started = time.perf_counter()
                done = subprocess.run(
                    onnx_script.command(ctx.python, arch, config, weights, out),
                    env=base_env(),
                    cwd=ctx.tmp,
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=False,
                )
                seconds = time.perf_counter() - started
                if done.returncode != 0:
                    raise RuntimeError(f"the fresh ONNX script failed for {arch}:\n{done.stderr[-3000:]}")
                out.unlink(missing_ok=True)
                add(
                    f"onnx/{arch}/script/seconds",
                    seconds,
                    unit="s",
                    label=f"onnx {arch}: fresh python -c export + onnxruntime check",
                )
