"""The upload floor: a minimal Starlette endpoint that only writes the body to a file, hashes it and fsyncs.

Served by uvicorn with uvloop and httptools, as weightvault is. Anything the real service does beyond
this (parsing, validation, writing the variants, the database) is its overhead over the floor.

    python -m benchmarks.floor_server --port 8100 --dir /tmp/floor
"""

from __future__ import annotations

import argparse
import hashlib
import os
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

    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/upload", upload, methods=["PUT", "POST"]), Route("/healthz", healthz)])


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
