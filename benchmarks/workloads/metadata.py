"""Workload 5: metadata reads at N clients against the floor (one SQLite SELECT by key in a minimal
Starlette app), on SQLite and on PostgreSQL (a database created for the run and dropped after it).

Per database: the model and version 1 alternating (the MLflow comparison); then each read alone on a
model with 50 versions (the model, version 1, a page of 50); then the same after a bulk fill to
``FILL_MODELS`` models and ``FILL_VERSIONS`` versions with metadata, plus a name/architecture search and
the newest-first page of versions. On SQLite, also the model read at the most clients with 1 and 2 API
processes (``serve --workers``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.settings import default_api_workers
from benchmarks import loadgen, rawhttp, servers
from benchmarks.context import Context, create_model, expect, say
from benchmarks.fill import fill
from benchmarks.memory import tree_cpu_seconds
from benchmarks.servers import Running

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("PGPORT", "5432")
PG_USER = os.environ.get("PGUSER", "postgres")
MODEL = "meta"
PATHS = [f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/1"]
FLOOR_PATHS = [f"/models/{MODEL}"]
# Each read alone; the versions of MODEL are 50 (1 uploaded, 49 bulk-inserted) before the fill.
READS = {
    "model": [f"/v1/models/{MODEL}"],
    "version": [f"/v1/models/{MODEL}/versions/1"],
    "page50": [f"/v1/models/{MODEL}/versions?limit=50"],
}
FILLED_READS = {
    **READS,
    "page50_newest": [f"/v1/models/{MODEL}/versions?limit=50&order=desc"],
    "search": ["/v1/models?q=mlp-0001&architecture=mlp&limit=50"],
}
FILL_MODELS = 10_000
FILL_VERSIONS = 100_000


def _psql(sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", "postgres", "-tAqc", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def _postgres_database() -> Iterator[str | None]:
    """A fresh database's URL (None when PostgreSQL is not reachable); dropped on exit."""
    try:
        reachable = _psql("SELECT 1").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        reachable = False
    if not reachable:
        yield None
        return
    name = f"wv_bench_{os.getpid()}_{int(time.time())}"
    created = _psql(f"CREATE DATABASE {name}")
    if created.returncode != 0:
        raise RuntimeError(f"could not create {name}: {created.stderr}")
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _wait_until_idle(server: Running, timeout: float = 60.0) -> None:
    """Wait until a freshly started server stops using the CPU by itself: each API process warms up in
    the background (the architectures' parameter counts import torch's meta kernels, seconds of CPU),
    which measured right after start made 2 processes answer 1,661 req/s against 9,600 once settled."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds(server.process.pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = tree_cpu_seconds(server.process.pid)
        if now - before < 0.05:
            return
        before = now
    say(f"server {server.url} still busy after {timeout:.0f} s; measuring anyway")


def measure(
    ctx: Context,
    server: Running,
    paths: list[str],
    prefix: str,
    label: str,
    clients_list: list[int] | None = None,
) -> None:
    """Warm up, then ``repeats`` timed runs per client count: req/s, p50, p99 and the server's CPU per request."""
    add = ctx.results.add
    # Every connection once, so each of a multi-process server's workers has answered before the clock runs.
    loadgen.run(server.url, paths, max(ctx.metadata_clients), 2.0)
    for clients in clients_list or ctx.metadata_clients:
        for repeat in range(ctx.repeats):
            say(f"{label}: {clients} clients, repeat {repeat + 1}/{ctx.repeats}")
            cpu_before = tree_cpu_seconds(server.process.pid)
            result = loadgen.run(server.url, paths, clients, ctx.metadata_seconds)
            cpu = tree_cpu_seconds(server.process.pid) - cpu_before
            if result.errors:
                ctx.results.error(f"{label} at {clients} clients: {result.errors} failed requests")
            what = f"{label}, {clients} client{'s' if clients > 1 else ''}"
            add(f"{prefix}/c{clients}/rps", result.rps, unit="req/s", label=f"{what}: requests/s")
            add(f"{prefix}/c{clients}/p50_ms", result.p50_ms, unit="ms", label=f"{what}: p50 latency")
            add(f"{prefix}/c{clients}/p99_ms", result.p99_ms, unit="ms", label=f"{what}: p99 latency")
            add(
                f"{prefix}/c{clients}/cpu_ms",
                cpu * 1000 / max(1, result.requests),
                unit="ms",
                label=f"{what}: server CPU per request",
            )
            ctx.results.context.setdefault("load_tool", result.tool)


def _floor(ctx: Context) -> None:
    with servers.floor(ctx.tmp) as floor:
        expect(rawhttp.request(floor.url, "GET", FLOOR_PATHS[0]), 200, "floor read")
        measure(ctx, floor, FLOOR_PATHS, "metadata/floor", "metadata floor (Starlette + one sqlite3 SELECT)")


def run(ctx: Context) -> None:
    for database in ctx.metadata_databases:
        # Before each database's runs, into the same samples: on a shared machine the load moves, and the
        # floor's median is then from the same minutes as the reads it is compared with.
        _floor(ctx)
        if database == "sqlite":
            _run_on(ctx, "sqlite", None)
            continue
        with _postgres_database() as url:
            if url is None:
                ctx.results.error(f"metadata: PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}; skipped")
                continue
            _run_on(ctx, "postgresql", url)


def _run_on(ctx: Context, database: str, url: str | None) -> None:
    with servers.weightvault(ctx.tmp, tag=f"metadata-{database}", database_url=url) as wv:
        assert wv.data_dir is not None
        db_url = url or f"sqlite:///{(wv.data_dir / 'weightvault.db').resolve()}"
        weights, config = ctx.inputs.arch("simple-linear", seed=0)
        create_model(wv, MODEL, "simple-linear", config)
        expect(rawhttp.upload_raw(wv.url, f"/v1/models/{MODEL}/versions", weights), 201, "upload")
        _wait_until_idle(wv)
        label = "metadata SQLite" if database == "sqlite" else "metadata PostgreSQL"
        measure(ctx, wv, PATHS, f"metadata/{database}", f"{label} (weightvault)")
        fill(db_url, models=0, versions=0, extra_versions={MODEL: 49})
        for name, paths in READS.items():
            measure(ctx, wv, paths, f"metadata/{database}/{name}", f"{label} {name} (weightvault)")
        say(f"{label}: filling to {FILL_MODELS:,} models and {FILL_VERSIONS:,} versions")
        began = time.monotonic()
        fill(db_url, models=FILL_MODELS, versions=FILL_VERSIONS)
        ctx.results.add(
            f"metadata/{database}/fill_seconds",
            time.monotonic() - began,
            unit="s",
            label=f"{label}: bulk fill of {FILL_MODELS:,} models, {FILL_VERSIONS:,} versions",
        )
        for name, paths in FILLED_READS.items():
            what = f"{label} filled {name} (weightvault)"
            measure(ctx, wv, paths, f"metadata/{database}/filled/{name}", what)
        if database != "sqlite":
            return
        top = [max(ctx.metadata_clients)]
        measure(ctx, wv, READS["model"], "metadata/sqlite/workers1/model", f"{label} model, 1 process", top)
    if database == "sqlite":
        # 2, and what `serve` runs by default on this machine (one per core, app.settings).
        for processes in sorted({2, default_api_workers()} - {1}):
            tag = f"metadata-sqlite-{processes}"
            with servers.weightvault(ctx.tmp, tag=tag, database_url=db_url, api_workers=processes) as wvn:
                _wait_until_idle(wvn)
                measure(
                    ctx,
                    wvn,
                    READS["model"],
                    f"metadata/sqlite/workers{processes}/model",
                    f"{label} model, {processes} processes",
                    top,
                )
