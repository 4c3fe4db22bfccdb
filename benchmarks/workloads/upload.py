"""Workload 1: upload + ingest of a float32 state_dict, raw and multipart, against the floor.

Per size and repeat, in this order: the floor endpoint (raw PUT, sha256, fsync), the in-process steps in a
fresh child (torch.load mmap + load; safetensors.save_file + fsync; the app's whole ingest), then
weightvault raw and multipart. Each HTTP request is timed from connect to the last response byte while
the server's VmRSS and RssAnon are sampled every 20 ms. Each version is deleted, blobs included, before
the next, so every upload does the full work.
"""

from __future__ import annotations

import json
import shutil
import sys

from benchmarks import rawhttp, servers
from benchmarks.context import Context, create_model, delete_version, expect, run_child, say, settle, warm_up
from benchmarks.data import size_key, size_label
from benchmarks.memory import MemoryPeak, MemorySampler

MiB = 1024**2


def _record_memory(ctx: Context, prefix: str, label: str, peak: MemoryPeak) -> None:
    add = ctx.results.add
    add(f"{prefix}/peak_rss_mib", peak.rss_peak / MiB, unit="MiB", label=f"{label}: server peak VmRSS")
    add(
        f"{prefix}/anon_growth_mib",
        peak.anon_growth / MiB,
        unit="MiB",
        label=f"{label}: server RssAnon growth",
    )
    add(f"{prefix}/anon_peak_mib", peak.anon_peak / MiB, unit="MiB", label=f"{label}: server peak RssAnon")


def run(ctx: Context) -> None:
    for size in ctx.sizes:
        _run_size(ctx, size)
        if size != ctx.download_size:
            # Only the download size is needed again (download, MLflow); 4 GiB files add up.
            ctx.inputs.drop(ctx.inputs.sized(size)[0])


def _run_size(ctx: Context, size: int) -> None:
    key, label = size_key(size), size_label(size)
    file, config = ctx.inputs.sized(size)
    model = f"upload-{key.lower()}"
    add = ctx.results.add
    with servers.floor(ctx.tmp) as floor, servers.weightvault(ctx.tmp, tag=f"upload-{key}") as wv:
        create_model(wv, model, "mlp", config)
        warm_up(ctx, wv)
        small, _ = ctx.inputs.arch("simple-linear", seed=0)
        expect(rawhttp.upload_raw(floor.url, "/upload", small, method="PUT"), 201, "floor warm-up")
        for repeat in range(ctx.repeats):
            say(f"upload {label}: repeat {repeat + 1}/{ctx.repeats}")
            settle()
            with MemorySampler(floor.pid) as sampler:
                reply = expect(rawhttp.upload_raw(floor.url, "/upload", file, method="PUT"), 201, "floor PUT")
            assert sampler.peak is not None
            add(
                f"upload/{key}/floor_put/seconds",
                reply.seconds,
                unit="s",
                label=f"upload {label}: floor raw PUT (sha256 + fsync)",
            )
            _record_memory(ctx, f"upload/{key}/floor_put", f"upload {label}: floor raw PUT", sampler.peak)

            settle()
            out = run_child(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.inprocess",
                    "--upload",
                    str(file),
                    "--architecture",
                    "mlp",
                    "--config",
                    json.dumps(config),
                    "--workdir",
                    str(ctx.tmp / "inprocess"),
                ],
                timeout=3600,
                cwd=ctx.tmp,
            )
            steps = json.loads(out.strip().splitlines()[-1])
            add(
                f"upload/{key}/inproc_load/seconds",
                steps["load_seconds"],
                unit="s",
                label=f"upload {label}: in-process torch.load(mmap) + load into architecture",
            )
            add(
                f"upload/{key}/inproc_safetensors/seconds",
                steps["safetensors_seconds"],
                unit="s",
                label=f"upload {label}: in-process safetensors.save_file + fsync",
            )
            add(
                f"upload/{key}/inproc_safetensors/anon_growth_mib",
                steps["safetensors_anon_growth"] / MiB,
                unit="MiB",
                label=f"upload {label}: in-process safetensors.save_file RssAnon growth",
            )
            add(
                f"upload/{key}/inproc_ingest/seconds",
                steps["ingest_seconds"],
                unit="s",
                label=f"upload {label}: in-process app ingest_checkpoint (no HTTP, no DB)",
            )
            add(
                f"upload/{key}/inproc_ingest/anon_growth_mib",
                steps["ingest_anon_growth"] / MiB,
                unit="MiB",
                label=f"upload {label}: in-process app ingest_checkpoint RssAnon growth",
            )

            for mode, send in (("raw", rawhttp.upload_raw), ("multipart", rawhttp.upload_multipart)):
                settle()
                with MemorySampler(wv.pid) as sampler:
                    reply = expect(send(wv.url, f"/v1/models/{model}/versions", file), 201, f"{mode} upload")
                assert sampler.peak is not None
                add(
                    f"upload/{key}/service_{mode}/seconds",
                    reply.seconds,
                    unit="s",
                    label=f"upload {label}: weightvault {mode} upload + ingest",
                )
                _record_memory(
                    ctx, f"upload/{key}/service_{mode}", f"upload {label}: weightvault {mode}", sampler.peak
                )
                delete_version(wv, model, reply.json())
    shutil.rmtree(ctx.tmp / "inprocess", ignore_errors=True)
