"""The conversion worker: claim a job, keep its lease alive, export and check, record the outcome.

One process runs one job at a time and stays warm between jobs (torch, the exporter and onnxruntime
are imported and exercised once at start). A job over its time limit is failed and the process exits;
its supervisor starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from app.architectures.builtin import SIMPLE_LINEAR
from app.artifacts import stored
from app.checkpoints.compose_load import load_composed_safetensors
from app.checkpoints.ingest import load_artifact_weights
from app.checkpoints.validate import blueprint, complete_tied
from app.errors import ArchitectureNotFound
from app.jobs import heartbeat, service
from app.models.models import RegisteredModel
from app.onnx.export import ConversionFailed, ExportResult, describe_export_error, export_and_check
from app.onnx.options import OnnxOptions
from app.ops.logs import job_id_var
from app.runtime import Runtime
from app.storage.blobstore import sha256_and_crc32_file
from app.versions.models import Version

log = logging.getLogger("weightvault.worker")

TIME_LIMIT_EXIT_CODE = 75


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _Claimed:
    id: str
    version_id: int
    options: OnnxOptions


class LeaseKeeper(threading.Thread):
    """Renews a job's lease every third of its length until stopped; notes when the lease was lost."""

    def __init__(self, runtime: Runtime, job_id: str, worker_id: str, lease_seconds: float) -> None:
        super().__init__(daemon=True, name=f"lease-{job_id[:8]}")
        self.runtime, self.job_id, self.worker_id, self.lease_seconds = (
            runtime,
            job_id,
            worker_id,
            lease_seconds,
        )
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(min(self.lease_seconds / 3, heartbeat.BEAT_SECONDS)):
            # A long conversion is a live worker: keep its heartbeat fresh for /readyz.
            heartbeat.beat(self.runtime.settings.data_dir, self.worker_id)
            try:
                with self.runtime.sessions() as session:
                    if not service.renew_lease(
                        session=session,
                        job_id=self.job_id,
                        worker_id=self.worker_id,
                        lease_seconds=self.lease_seconds,
                    ):
                        self.lost = True
                        log.warning("lost the lease on job %s", self.job_id)
                        return
            except Exception:
                log.exception("could not renew the lease on job %s; will retry", self.job_id)

    def stop(self) -> None:
        self.stopped.set()


class Worker:
    def __init__(self, runtime: Runtime, worker_id: str | None = None) -> None:
        self.runtime = runtime
        self.worker_id = worker_id or new_worker_id()
        settings = runtime.settings
        self.lease_seconds = settings.job_lease_seconds
        self.time_limit = settings.job_time_limit_seconds
        self.poll_seconds = settings.worker_poll_seconds

    def warm_up(self) -> None:
        """Pay the exporter's first-use cost before the first real job."""
        # torch sets its loggers' levels when it is imported (after configure_logging): quiet the
        # exporter's "torchvision is not installed" lines here, where they would first appear.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        started = time.perf_counter()
        config = SIMPLE_LINEAR.effective_config({})
        weights = SIMPLE_LINEAR.build(config).state_dict()
        try:
            with self.runtime.store.staging() as workdir:
                export_and_check(
                    architecture=SIMPLE_LINEAR,
                    config=config,
                    weights=weights,
                    options=OnnxOptions(),
                    workdir=workdir,
                )
        except Exception:
            log.exception("warm-up export failed; continuing cold")
        log.info("worker %s warm in %.1fs", self.worker_id, time.perf_counter() - started)

    def run_forever(self, stop: threading.Event) -> None:
        parent = os.getppid()
        data_dir = self.runtime.settings.data_dir
        last_beat = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() - last_beat >= heartbeat.BEAT_SECONDS:
                    heartbeat.beat(data_dir, self.worker_id)
                    last_beat = time.monotonic()
                if not self._turn(parent, stop):
                    return
        finally:
            heartbeat.forget(data_dir, self.worker_id)

    def _turn(self, parent: int, stop: threading.Event) -> bool:
        """One claim-and-run (or wait); False when the worker should exit."""
        try:
            worked = self.run_once()
        except Exception:
            log.exception("worker loop error; pausing")
            worked = False
        if os.getppid() != parent:
            log.warning("parent process went away; worker exiting")
            return False
        if not worked:
            stop.wait(self.poll_seconds)
        return True

    def run_once(self) -> bool:
        """Run one job if one is waiting; returns whether there was one."""
        with self.runtime.sessions() as session:
            job = service.claim_next(
                session=session,
                worker_id=self.worker_id,
                lease_seconds=self.lease_seconds,
                queue_timeout_seconds=self.runtime.settings.job_queue_timeout_seconds,
            )
            if job is None:
                return False
            claimed = _Claimed(id=job.id, version_id=job.version_id, options=OnnxOptions(**job.options))
        log.info("worker %s running job %s (attempt %d)", self.worker_id, claimed.id, job.attempts)
        keeper = LeaseKeeper(self.runtime, claimed.id, self.worker_id, self.lease_seconds)
        watchdog = threading.Timer(self.time_limit, self._time_out, args=(claimed.id,))
        watchdog.daemon = True
        keeper.start()
        watchdog.start()
        context = job_id_var.set(claimed.id)
        try:
            self._run(claimed)
        finally:
            job_id_var.reset(context)
            watchdog.cancel()
            keeper.stop()
        return True

    def _run(self, claimed: _Claimed) -> None:
        with self.runtime.store.staging() as workdir:
            try:
                result = self._convert(claimed, workdir)
            except ConversionFailed as exc:
                self._fail(claimed.id, exc.code, exc.message, exc.report)
                return
            except Exception as exc:
                log.exception("job %s failed unexpectedly", claimed.id)
                self._fail(
                    claimed.id,
                    "internal_error",
                    f"The conversion failed unexpectedly: {describe_export_error(exc)}",
                )
                return
            sha256, crc32 = sha256_and_crc32_file(result.path)
            with self.runtime.sessions() as session:
                recorded = service.finish_success(
                    session=session,
                    store=self.runtime.store,
                    job_id=claimed.id,
                    worker_id=self.worker_id,
                    staged_file=result.path,
                    sha256=sha256,
                    crc32=crc32,
                    packaging="zip" if result.packaging == "zip" else "file",
                    report=result.report,
                )
            log.info(
                "job %s %s",
                claimed.id,
                "succeeded" if recorded else "finished after its lease was lost; discarded",
            )

    def _convert(self, claimed: _Claimed, workdir: Path) -> ExportResult:
        with self.runtime.sessions() as session:
            version = session.get(Version, claimed.version_id)
            model = session.get(RegisteredModel, version.model_id) if version is not None else None
            if version is None or model is None:
                raise ConversionFailed(
                    "version_deleted", "The version was deleted before it could be converted."
                )
            weights_artifact = next(
                a for a in version.artifacts if a.kind == "weights" and a.format == "safetensors"
            )
            sha256, architecture_name, config = (
                weights_artifact.sha256,
                model.architecture,
                dict(model.config),
            )
            recipe = (
                stored.recipe_of(store=self.runtime.store, artifact=weights_artifact)
                if stored.is_recipe(weights_artifact)
                else None
            )
        try:
            architecture = self.runtime.registry.get(architecture_name)
        except ArchitectureNotFound:
            raise ConversionFailed(
                "architecture_not_found", f"This worker does not know the architecture '{architecture_name}'."
            ) from None
        plan = blueprint(architecture, config)
        if recipe is not None:
            # Composed from the tensor blobs, each mapped: the file is never written out.
            tensors, _metadata = load_composed_safetensors(recipe, self.runtime.store, scratch=workdir)
            weights = complete_tied(tensors, plan)
        else:
            weights = load_artifact_weights(
                kind="weights",
                fmt="safetensors",
                path=self.runtime.store.path_for(sha256),
                plan=plan,
                limits=self.runtime.read_limits,
            )
        with torch.inference_mode(False):
            return export_and_check(
                architecture=architecture,
                config=config,
                weights=weights,
                options=claimed.options,
                workdir=workdir,
            )

    def _fail(self, job_id: str, code: str, message: str, report: dict[str, object] | None = None) -> None:
        with self.runtime.sessions() as session:
            service.finish_failure(
                session=session,
                job_id=job_id,
                worker_id=self.worker_id,
                code=code,
                message=message,
                report=report,
            )
        log.info("job %s failed: %s", job_id, message)

    def _time_out(self, job_id: str) -> None:
        # The export cannot be interrupted from inside; record the failure, then end the process.
        try:
            self._fail(
                job_id,
                "time_limit",
                f"The conversion took longer than {self.time_limit:g} s (WEIGHTVAULT_JOB_TIME_LIMIT_SECONDS) and was stopped.",
            )
        finally:
            os._exit(TIME_LIMIT_EXIT_CODE)
