"""Prometheus metrics. Request and upload metrics are counted in each API process (multiprocess mode
when there are several); job, queue and storage figures are read from the database at scrape time,
so they are right whichever process or machine ran the work."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select

from app.jobs import heartbeat
from app.runtime import Runtime

REQUESTS = Counter(
    "weightvault_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"]
)
LATENCY = Histogram(
    "weightvault_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BYTES_IN = Counter("weightvault_http_received_bytes_total", "Request body bytes received", ["route"])
BYTES_OUT = Counter("weightvault_http_sent_bytes_total", "Response body bytes sent", ["route"])
UPLOADS = Counter("weightvault_uploads_total", "Uploads by outcome (accepted or the error code)", ["outcome"])


class DatabaseCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from app.artifacts import stored
        from app.jobs.models import STATUSES, Job

        with self.runtime.sessions() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            durations = session.execute(
                select(Job.status, Job.started_at, Job.finished_at).where(Job.finished_at.is_not(None))
            ).all()
            at_rest, blobs = stored.bytes_at_rest(session=session, store=self.runtime.store)
        jobs = GaugeMetricFamily("weightvault_jobs", "Conversion jobs by status", labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "weightvault_job_queue_depth", "Jobs waiting for a worker", value=counts.get("queued", 0)
        )
        seconds = GaugeMetricFamily(
            "weightvault_job_duration_seconds_total", "Summed run time of finished jobs", labels=["status"]
        )
        finished = GaugeMetricFamily(
            "weightvault_jobs_finished", "Finished jobs counted in the run time", labels=["status"]
        )
        for status in ("succeeded", "failed"):
            spans = [
                (end - start).total_seconds() for s, start, end in durations if s == status and start and end
            ]
            seconds.add_metric([status], sum(spans))
            finished.add_metric([status], len(spans))
        yield seconds
        yield finished
        yield GaugeMetricFamily(
            "weightvault_storage_bytes",
            "Bytes at rest: distinct whole-file, recipe and tensor blobs the artifacts keep",
            value=at_rest,
        )
        yield GaugeMetricFamily(
            "weightvault_storage_blobs", "Distinct stored blobs (files, recipes, tensors)", value=blobs
        )
        # Counted by the worker supervisors (other processes) in the data dir, read here at scrape time.
        yield CounterMetricFamily(
            "weightvault_conversion_worker_restarts",
            "Conversion worker processes restarted by a supervisor after they exited",
            value=heartbeat.restart_total(self.runtime.settings.data_dir),
        )


def render(runtime: Runtime) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        output = generate_latest(registry)
    else:
        output = generate_latest(REGISTRY)
    database = CollectorRegistry()
    database.register(DatabaseCollector(runtime))
    return output + generate_latest(database)
