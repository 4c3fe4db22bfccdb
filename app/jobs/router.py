"""POST .../onnx, GET /v1/jobs[/{id}]"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response

from app.api.pagination import Page, page_of
from app.auth.policy import requires
from app.deps import DownloadUrlDep, PageDep, SessionDep, SettingsDep, ValidModel, ValidVersion
from app.jobs import service
from app.jobs.schemas import JobRead
from app.models import service as models_service
from app.onnx.export import runtime_versions
from app.onnx.options import OnnxOptions, OnnxOptionsIn

router = APIRouter(tags=["jobs"])


@router.post(
    "/v1/models/{model}/versions/{ref}/onnx",
    status_code=202,
    responses={200: {"model": JobRead}},
    dependencies=[requires("write")],
)
def convert_to_onnx(
    request: Request,
    model: ValidModel,
    version: ValidVersion,
    session: SessionDep,
    settings: SettingsDep,
    url: DownloadUrlDep,
    response: Response,
    options: Annotated[OnnxOptionsIn | None, Body()] = None,
) -> JobRead:
    """Queue an ONNX conversion (202), or return the job that already has these effective options (200)."""
    effective = OnnxOptions.effective(options)
    job, created = service.submit_onnx(
        session=session,
        model=model,
        version=version,
        options=effective,
        versions=runtime_versions(),
        max_attempts=settings.job_max_attempts,
        queue_timeout_seconds=settings.job_queue_timeout_seconds,
    )
    response.status_code = 202 if created else 200
    response.headers["Location"] = str(request.app.url_path_for("get_job", job_id=job.id))
    return service.to_read(job, model_name=model.name, version_number=version.number, url=url)


@router.get("/v1/jobs/{job_id}", dependencies=[requires("read")])
def get_job(job_id: str, session: SessionDep, settings: SettingsDep, url: DownloadUrlDep) -> JobRead:
    service.expire_queued(session=session, timeout_seconds=settings.job_queue_timeout_seconds)
    job = service.get_job(session=session, job_id=job_id)
    return service.read_jobs(session=session, jobs=[job], url=url)[0]


@router.get("/v1/jobs", dependencies=[requires("read")])
def list_jobs(
    session: SessionDep,
    settings: SettingsDep,
    page: PageDep,
    url: DownloadUrlDep,
    model: Annotated[str | None, Query(max_length=1024)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
) -> Page[JobRead]:
    service.expire_queued(session=session, timeout_seconds=settings.job_queue_timeout_seconds)
    owner = models_service.get_model(session=session, name=model) if model is not None else None
    rows = list(
        service.list_jobs(session=session, model=owner, status=status, limit=page.limit, after=page.after)
    )
    items, cursor = page_of(rows, page, key=lambda job: job.seq)
    return Page(items=service.read_jobs(session=session, jobs=items, url=url), next_cursor=cursor)
