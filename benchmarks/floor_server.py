"""The floors: minimal Starlette endpoints for what weightvault's requests must at least do.

``PUT /upload`` only writes the body to a file, hashes it and fsyncs. ``GET /models/{name}`` is one SQLite
``SELECT`` by key (a row shaped like a model record, in ``--dir``/floor.db) answered as a JSON body.
Served by uvicorn with uvloop and httptools, as weightvault is. Anything the real service does beyond
this (parsing, validation, writing the variants, the ORM, auth, logging) is its overhead over the floor.

    python -m benchmarks.floor_server --port 8100 --dir /tmp/floor
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


def make_app(directory: Path) -> Starlette:
    directory.mkdir(parents=True, exist_ok=True)

    async def upload(request: Request) -> JSONResponse:
        path = directory / f"upload-{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        with path.open("wb") as handle:
            async for chunk in request.stream():
                digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        # Removed after the response went out, so the client's clock does not include it.
        return JSONResponse(
            {"size": size, "sha256": digest.hexdigest()},
            status_code=201,
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    database = sqlite3.connect(directory / "floor.db", check_same_thread=False)
    database.execute(
        "CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, architecture TEXT, config TEXT, "
        "description TEXT, metadata TEXT, created_at TEXT, latest_version INTEGER)"
    )
    database.execute(
        "INSERT OR REPLACE INTO models VALUES ('meta', 'simple-linear', '{\"in_features\": 10}', NULL, "
        "'{}', '2026-11-29T00:00:00Z', 1)"
    )
    database.commit()

    async def get_model(request: Request) -> JSONResponse:
        row = database.execute(
            "SELECT name, architecture, config, description, metadata, created_at, latest_version "
            "FROM models WHERE name = ?",
            (request.path_params["name"],),
        ).fetchone()
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        name, architecture, config, description, metadata, created_at, latest = row
        return JSONResponse(
            {
                "name": name,
                "architecture": architecture,
                "config": json.loads(config),
                "description": description,
                "metadata": json.loads(metadata),
                "created_at": created_at,
                "latest_version": latest,
                "aliases": {},
            }
        )

    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/upload", upload, methods=["PUT", "POST"]),
            Route("/models/{name}", get_model),
            Route("/healthz", healthz),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.dir),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
