"""The one way an HTTP entry point (direct upload, resumable upload) turns received bytes into a version."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.models.models import RegisteredModel
from app.runtime import Runtime
from app.versions import service
from app.versions.models import Version
from app.versions.service import ReceivedUpload


async def create_version_from(
    *,
    runtime: Runtime,
    session: Session,
    model: RegisteredModel,
    upload: ReceivedUpload,
    metadata: Mapping[str, Any],
    workdir: Path,
) -> Version:
    """``service.create_version`` with the runtime's store, registry, limits and ingest pool, in a thread."""
    return await run_in_threadpool(
        lambda: service.create_version(
            session=session,
            store=runtime.store,
            registry=runtime.registry,
            limits=runtime.read_limits,
            ingester=runtime.ingester,
            model=model,
            upload=upload,
            metadata=metadata,
            workdir=workdir,
        )
    )
