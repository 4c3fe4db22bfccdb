"""/healthz, /readyz, /metrics"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api.errors import ErrorResponse, error_body
from app.auth.policy import requires
from app.deps import RuntimeDep
from app.jobs import heartbeat
from app.ops.metrics import render

router = APIRouter(tags=["operations"])


@router.get("/healthz", dependencies=[requires(None)])
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", response_model=None, dependencies=[requires(None)])
async def readyz(runtime: RuntimeDep) -> dict[str, object] | JSONResponse:
    database = await run_in_threadpool(runtime.database_ok)
    storage = await run_in_threadpool(runtime.store.usable)
    checks = {"database": database, "storage": storage}
    if runtime.settings.expected_conversion_workers:
        # serve supervises workers here: one that cannot start leaves conversions queued forever.
        alive = await run_in_threadpool(heartbeat.live_workers, runtime.settings.data_dir)
        checks["conversion_workers"] = alive > 0
    if all(checks.values()):
        return {"status": "ready", "checks": checks}
    failing = [name for name, ok in checks.items() if not ok]
    return ErrorResponse(
        error_body("not_ready", f"Not ready: {', '.join(failing)} unusable.", {"checks": checks}),
        status_code=503,
    )


@router.get("/metrics", dependencies=[requires(None)])
def metrics(runtime: RuntimeDep) -> Response:
    return Response(render(runtime), media_type=CONTENT_TYPE_LATEST)
