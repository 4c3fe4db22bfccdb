"""The FastAPI application factory."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api import fast_reads
from app.api.errors import install_error_handlers
from app.api.openapi import install_contract_openapi
from app.api.query_params import reject_unknown_query_params
from app.architectures.router import router as architectures_router
from app.artifacts.router import router as artifacts_router
from app.auth.policy import authorize, declare_docs_public
from app.auth.router import router as auth_router
from app.jobs.router import router as jobs_router
from app.models.router import router as models_router
from app.ops.logs import configure_logging
from app.ops.middleware import RequestContextMiddleware
from app.ops.router import router as ops_router
from app.runtime import open_runtime
from app.settings import Settings, get_settings
from app.ui.router import router as ui_router
from app.uploads.router import router as uploads_router
from app.versions.router import router as versions_router

log = logging.getLogger("weightvault")
_PR_SET_PDEATHSIG = 1


def _die_with_serve() -> None:
    """In an API process `serve` started (several of them): die with it, like its children would."""
    serve_pid = os.environ.get("WEIGHTVAULT_SERVE_PID")
    if not serve_pid or int(serve_pid) == os.getpid():
        return
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(serve_pid):  # serve died before the request above took effect
        os._exit(1)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; start-up creates the data dir, applies migrations and cleans staging leftovers."""
    chosen = settings or get_settings()
    _die_with_serve()
    if not logging.getLogger().handlers:
        # An API process spawned by uvicorn for --workers N starts with no logging set up.
        configure_logging(chosen.log_level, chosen.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = open_runtime(chosen, migrate=chosen.migrate_on_start)
        app.state.runtime = runtime
        if chosen.ingest_prestart:
            runtime.ingester.prestart()
        # Counting the code architectures' parameters imports torch's meta-device kernels (seconds, once):
        # done now in the background rather than in the first GET /v1/architectures.
        threading.Thread(target=runtime.registry.warm, name="architectures-warm", daemon=True).start()
        log.debug("weightvault %s serving data dir %s", __version__, chosen.data_dir.resolve())
        if not chosen.auth_enabled:
            log.warning("authentication is off: every request is allowed (set WEIGHTVAULT_AUTH=on)")
        try:
            yield
        finally:
            if runtime.postgres_loop_reads is not None:
                await runtime.postgres_loop_reads.aclose()
            runtime.close()

    # FastAPIOffline serves Swagger UI and ReDoc from its package, not a CDN: /docs works offline.
    app = FastAPIOffline(
        title="weightvault",
        version=__version__,
        description="A model-artifact store for PyTorch: upload checkpoints, get proven full/weights/ONNX artifacts.",
        lifespan=lifespan,
        # Authorisation first: a caller without access learns nothing about the parameters.
        dependencies=[Depends(authorize), Depends(reject_unknown_query_params)],
    )
    declare_docs_public(app)
    install_error_handlers(app)
    install_contract_openapi(app)
    app.add_middleware(RequestContextMiddleware)
    # In front of everything, RequestContextMiddleware included: the hot reads it answers do its part too.
    # The wait applies even where this process keeps nothing: other processes may lease stamps.
    fast_reads.install(app, lease_seconds=chosen.read_lease_ms / 1000)
    for router in (
        ops_router,
        architectures_router,
        models_router,
        versions_router,
        artifacts_router,
        jobs_router,
        uploads_router,
        auth_router,
        ui_router,
    ):
        app.include_router(router)
    return app
