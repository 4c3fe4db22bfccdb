"""Workload 4: metadata reads (GET /v1/models/{m}, GET /v1/models/{m}/versions/1, alternating) at N clients,
on SQLite and on PostgreSQL (a database created for the run and dropped after it)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks import loadgen, rawhttp, servers
from benchmarks.context import Context, create_model, expect, say
from benchmarks.memory import tree_cpu_seconds
from benchmarks.servers import Running

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = os.environ.get("PGPORT", "5432")
PG_USER = os.environ.get("PGUSER", "postgres")
MODEL = "meta"
PATHS = [f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/1"]


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


def measure(ctx: Context, server: Running, paths: list[str], prefix: str, label: str) -> None:
    """Warm up, then ``repeats`` timed runs per client count: req/s, p50, p99 and the server's CPU per request."""
    add = ctx.results.add
    # Every connection once, so each of a multi-process server's workers has answered before the clock runs.
    loadgen.run(server.url, paths, max(ctx.metadata_clients), 2.0)
    for clients in ctx.metadata_clients:
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


def run(ctx: Context) -> None:
    for database in ctx.metadata_databases:
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
        weights, config = ctx.inputs.arch("simple-linear", seed=0)
        create_model(wv, MODEL, "simple-linear", config)
        expect(rawhttp.upload_raw(wv.url, f"/v1/models/{MODEL}/versions", weights), 201, "upload")
        label = "metadata SQLite" if database == "sqlite" else "metadata PostgreSQL"
        measure(ctx, wv, PATHS, f"metadata/{database}", f"{label} (weightvault)")
