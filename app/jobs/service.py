"""Submit, claim, renew and finish conversion jobs. Claims are exclusive: PostgreSQL rows are taken with
``FOR UPDATE SKIP LOCKED``; SQLite's ``BEGIN IMMEDIATE`` lets one claimer in at a time."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from app.artifacts import service as artifacts_service
from app.artifacts.models import Artifact
from app.artifacts.naming import DownloadUrl, Packaging
from app.artifacts.schemas import ArtifactSnapshot
from app.db.base import utcnow
from app.db.engine import begin_write
from app.errors import InvalidRequest, JobNotFound
from app.jobs.models import FAILED, QUEUED, RUNNING, STATUSES, SUCCEEDED, Job
from app.jobs.schemas import JobRead
from app.models.models import RegisteredModel
from app.onnx.options import OnnxOptions
from app.storage.blobstore import BlobStore
from app.versions.models import Version

ACTIVE_OR_DONE = (QUEUED, RUNNING, SUCCEEDED)


def options_key(options: OnnxOptions) -> str:
    return json.dumps(options.model_dump(mode="json"), sort_keys=True)


def cache_key(
    *, weights_sha256: str, model: RegisteredModel, options: OnnxOptions, versions: dict[str, str]
) -> str:
    """Same weights, architecture, config, options and toolchain give the same ONNX file."""
    material = {
        "weights": weights_sha256,
        "architecture": model.architecture,
        "config": model.config,
        "options": options.model_dump(mode="json"),
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def submit_onnx(
    *,
    session: Session,
    model: RegisteredModel,
    version: Version,
    options: OnnxOptions,
    versions: dict[str, str],
    max_attempts: int,
    queue_timeout_seconds: float | None = None,
) -> tuple[Job, bool]:
    """The job for these effective options: an existing queued/running/succeeded one, or a new one.

    Returns ``(job, created)``. A conversion with the same cache key that already succeeded (identical
    weights in another version) is reused at once. A new job may be run ``max_attempts`` times (the first
    run included) when its workers keep dying; the limit travels with the job, so every worker applies it.
    """
    weights = next((a for a in version.artifacts if a.kind == "weights" and a.format == "safetensors"), None)
    if weights is None:
        raise InvalidRequest(f"Version {version.number} has no weights artifact to convert.")
    key = options_key(options)
    begin_write(session)
    # Serialise submissions for one version (PostgreSQL row lock; SQLite's write lock already does).
    session.execute(select(Version.id).where(Version.id == version.id).with_for_update())
    if queue_timeout_seconds is not None:
        # A job past its queue deadline is failed now, so this request queues a fresh one.
        _expire_queued(session, queue_timeout_seconds)
    existing = session.scalar(
        select(Job)
        .where(Job.version_id == version.id, Job.options_key == key, Job.status.in_(ACTIVE_OR_DONE))
        .order_by(Job.seq.desc())
        .limit(1)
    )
    if existing is not None:
        session.commit()
        return existing, False
    cache = cache_key(weights_sha256=weights.sha256, model=model, options=options, versions=versions)
    job = Job(
        model_id=model.id,
        version_id=version.id,
        options=options.model_dump(mode="json"),
        options_key=key,
        cache_key=cache,
        max_attempts=max_attempts,
    )
    cached = session.scalar(
        select(Job)
        .where(Job.cache_key == cache, Job.status == SUCCEEDED, Job.artifact.is_not(None))
        .order_by(Job.seq.desc())
        .limit(1)
    )
    produced = ArtifactSnapshot.model_validate(cached.artifact) if cached and cached.artifact else None
    if cached is not None and produced is not None and _blob_referenced(session, produced.sha256):
        now = utcnow()
        artifact = _upsert_onnx_artifact(
            session=session,
            version=version,
            sha256=produced.sha256,
            # Snapshots from before CRCs were recorded have none: the artifact is then served without one.
            crc32=None if produced.crc32 is None else int(produced.crc32, 16),
            size=produced.size,
            packaging=produced.packaging,
            validation={**(cached.report or {}), "cached_from_job": cached.id},
        )
        job.status, job.started_at, job.finished_at = SUCCEEDED, now, now
        job.report = {**(cached.report or {}), "cached_from_job": cached.id}
        session.add(job)
        session.flush()
        job.artifact = artifacts_service.snapshot(artifact)
    else:
        session.add(job)
    session.commit()
    return job, True


def _blob_referenced(session: Session, sha256: str) -> bool:
    return artifacts_service.referenced(session=session, sha256=sha256)


NO_WORKER = "no_worker"


def expire_queued(*, session: Session, timeout_seconds: float) -> int:
    """Fail (``no_worker``) the jobs still queued ``timeout_seconds`` after they were submitted.

    Called before jobs are read or claimed, so no job is ever seen waiting past its deadline. A cheap
    read first: the write transaction is only opened when something is overdue. Returns how many.
    """
    cutoff = utcnow() - timedelta(seconds=timeout_seconds)
    overdue = session.scalar(select(Job.id).where(Job.status == QUEUED, Job.created_at < cutoff).limit(1))
    session.rollback()
    if overdue is None:
        return 0
    begin_write(session)
    expired = _expire_queued(session, timeout_seconds)
    session.commit()
    return expired


def _expire_queued(session: Session, timeout_seconds: float) -> int:
    cutoff = utcnow() - timedelta(seconds=timeout_seconds)
    overdue = session.scalars(
        select(Job).where(Job.status == QUEUED, Job.created_at < cutoff).with_for_update(skip_locked=True)
    ).all()
    for job in overdue:
        _fail(
            job,
            NO_WORKER,
            f"No conversion worker took the job within {timeout_seconds:g} seconds "
            "(WEIGHTVAULT_JOB_QUEUE_TIMEOUT_SECONDS); check that workers run (/readyz, their logs), "
            "then request the conversion again.",
        )
    return len(overdue)


def get_job(*, session: Session, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id)) if len(job_id) <= 64 else None
    if job is None:
        raise JobNotFound(f"No job with id '{job_id[:64]}'.", {"id": job_id[:64]})
    return job


def list_jobs(
    *, session: Session, model: RegisteredModel | None, status: str | None, limit: int, after: Any | None
) -> Sequence[Job]:
    query = select(Job).order_by(Job.seq).limit(limit + 1)
    if model is not None:
        query = query.where(Job.model_id == model.id)
    if status is not None:
        if status not in STATUSES:
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}.", {"status": status[:32]})
        query = query.where(Job.status == status)
    if isinstance(after, int):
        query = query.where(Job.seq > after)
    return session.scalars(query).all()


def claim_next(
    *, session: Session, worker_id: str, lease_seconds: float, queue_timeout_seconds: float | None = None
) -> Job | None:
    """Take the oldest queued job (or one whose worker's lease ran out) for ``worker_id``.

    Jobs queued past ``queue_timeout_seconds`` are failed (``no_worker``), not run: their client was told.
    """
    begin_write(session)
    now = utcnow()
    if queue_timeout_seconds is not None:
        _expire_queued(session, queue_timeout_seconds)
    lapsed = and_(Job.status == RUNNING, Job.lease_expires_at < now)
    exhausted = session.scalars(
        select(Job).where(lapsed, Job.attempts >= Job.max_attempts).with_for_update(skip_locked=True)
    ).all()
    for lost in exhausted:
        _fail(
            lost,
            "worker_lost",
            f"The conversion was interrupted {lost.attempts} times (its worker died or was killed each time), "
            f"its limit (WEIGHTVAULT_JOB_MAX_ATTEMPTS={lost.max_attempts}); giving up. Request it again to retry.",
        )
    job = session.scalar(
        select(Job)
        .where(or_(Job.status == QUEUED, and_(lapsed, Job.attempts < Job.max_attempts)))
        .order_by(Job.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if job is not None:
        job.status = RUNNING
        job.lease_owner = worker_id
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
        job.attempts += 1
        job.started_at = job.started_at or now
    session.commit()
    return job


def renew_lease(*, session: Session, job_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease; False when the job is no longer this worker's."""
    begin_write(session)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == RUNNING)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds)),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def _owned(session: Session, job_id: str, worker_id: str) -> Job | None:
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None or job.status != RUNNING or job.lease_owner != worker_id:
        return None
    return job


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: JSON has no NaN or infinity, and PostgreSQL
    refuses them, which would leave the outcome unrecorded and the job to be retried as a lost worker's."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _fail(job: Job, code: str, message: str, report: dict[str, Any] | None = None) -> None:
    job.status = FAILED
    job.finished_at = utcnow()
    job.error = {"code": code, "message": message}
    job.report = _finite(report) if report else job.report
    job.lease_owner = None
    job.lease_expires_at = None


def finish_failure(
    *,
    session: Session,
    job_id: str,
    worker_id: str,
    code: str,
    message: str,
    report: dict[str, Any] | None = None,
) -> bool:
    begin_write(session)
    job = _owned(session, job_id, worker_id)
    if job is None:
        session.rollback()
        return False
    _fail(job, code, message, report)
    session.commit()
    return True


def finish_success(
    *,
    session: Session,
    store: BlobStore,
    job_id: str,
    worker_id: str,
    staged_file: Any,
    sha256: str,
    crc32: int,
    packaging: Packaging,
    report: dict[str, Any],
) -> bool:
    """Store the file, then (only then) record the artifact and the job's success in one commit."""
    blob = store.put(staged_file, sha256)
    try:
        begin_write(session)
        job = _owned(session, job_id, worker_id)
        version = session.get(Version, job.version_id) if job is not None else None
        if job is None or version is None:
            session.rollback()
            store.discard(blob)
            return False
        report = _finite(report)
        artifact = _upsert_onnx_artifact(
            session=session,
            version=version,
            sha256=sha256,
            crc32=crc32,
            size=blob.size,
            packaging=packaging,
            validation=report,
        )
        job.status = SUCCEEDED
        job.finished_at = utcnow()
        job.report = report
        job.error = None
        job.lease_owner = None
        job.lease_expires_at = None
        session.flush()
        job.artifact = artifacts_service.snapshot(artifact)
        session.commit()
    except BaseException:
        session.rollback()
        store.discard(blob)
        raise
    return True


def _upsert_onnx_artifact(
    *,
    session: Session,
    version: Version,
    sha256: str,
    crc32: int | None,
    size: int,
    packaging: Packaging,
    validation: dict[str, Any],
) -> Artifact:
    artifact = session.scalar(
        select(Artifact).where(
            Artifact.version_id == version.id, Artifact.kind == "onnx", Artifact.format == "onnx"
        )
    )
    checked = {"status": "passed", "checked_at": utcnow().isoformat(), **validation}
    if artifact is None:
        artifact = Artifact(
            version_id=version.id,
            kind="onnx",
            format="onnx",
            sha256=sha256,
            crc32=crc32,
            size=size,
            packaging=packaging,
            validation=checked,
        )
        session.add(artifact)
    else:
        artifact.sha256, artifact.crc32, artifact.size, artifact.packaging = sha256, crc32, size, packaging
        artifact.validation, artifact.created_at = checked, utcnow()
    session.flush()
    return artifact


def to_read(job: Job, *, model_name: str, version_number: int, url: DownloadUrl) -> JobRead:
    artifact = None
    if job.artifact:
        artifact = artifacts_service.snapshot_read(
            job.artifact, model=model_name, version=version_number, url=url
        )
    return JobRead.model_validate(
        {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "model": model_name,
            "version": version_number,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "options": job.options,
            "attempts": job.attempts,
            "error": job.error,
            "artifact": artifact,
            "report": job.report,
        }
    )


def read_jobs(*, session: Session, jobs: Sequence[Job], url: DownloadUrl) -> list[JobRead]:
    """Render jobs with their model names and version numbers in one query."""
    ids = {job.version_id for job in jobs}
    rows = (
        session.execute(
            select(Version.id, Version.number, RegisteredModel.name)
            .join(RegisteredModel)
            .where(Version.id.in_(ids))
        ).all()
        if ids
        else []
    )
    names = {version_id: (name, number) for version_id, number, name in rows}
    return [
        to_read(job, model_name=names[job.version_id][0], version_number=names[job.version_id][1], url=url)
        for job in jobs
        if job.version_id in names
    ]
