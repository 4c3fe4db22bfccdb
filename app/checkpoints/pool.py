"""Ingest in disposable child processes: a small reused pool, one upload per child at a time.

torch's C++ readers and our own are large attack surfaces: a crash, a hang or a runaway allocation
while reading an upload must cost that upload only, never the API process and its other requests.
Each ingest is sent (paths and small values) to an idle child over a pipe; the child reads, validates,
writes and proves into the caller's staging ``workdir`` and sends back the small ``IngestResult``.

A child that dies (a signal, SIGXCPU), goes over its memory limit or its time limit is killed and
waited for before the caller sees ``IngestCrashed`` (422) or ``IngestTimeout`` (503), so nothing writes
into the workdir after the caller removed it; the next ingest starts a fresh child. Children are
forked from multiprocessing's fork server, which imports torch once per API process: a new child is
ready in milliseconds, so the pool can start lazily and replace children freely.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

from app.architectures.probe import Probed, Recipe, probe
from app.architectures.spec import Architecture
from app.checkpoints import child
from app.checkpoints.folder_artifact import DEFAULT_HF_SHARD_BYTES
from app.checkpoints.ingest import IngestResult, ingest_checkpoint
from app.checkpoints.limits import ReadLimits
from app.checkpoints.uploaded import upload_bytes
from app.errors import IngestCrashed, IngestFailed, IngestTimeout, InvalidArchitecture, WeightvaultError

log = logging.getLogger("weightvault.ingest")

GiB = 1024**3
# At most this long (or the ingest base time limit) to check one registration (build on meta, count).
PROBE_SECONDS = 120.0


class Ingester(Protocol):
    def ingest(
        self,
        *,
        upload: Path,
        architecture: Architecture,
        config: Mapping[str, Any],
        workdir: Path,
        limits: ReadLimits,
    ) -> IngestResult: ...

    def probe(self, recipe: Recipe) -> Probed: ...


class InProcessIngester:
    """Ingest in the calling process (benchmarks, tools): no isolation."""

    def ingest(
        self,
        *,
        upload: Path,
        architecture: Architecture,
        config: Mapping[str, Any],
        workdir: Path,
        limits: ReadLimits,
    ) -> IngestResult:
        return ingest_checkpoint(
            upload=upload, architecture=architecture, config=config, workdir=workdir, limits=limits
        )

    def probe(self, recipe: Recipe) -> Probed:
        return probe(recipe)


@dataclass(frozen=True)
class ProcessLimits:
    """What one ingest child may use; see the ``ingest_*`` settings."""

    memory_base_bytes: int | None = 4 * GiB
    memory_per_upload_byte: float = 4.0
    time_base_seconds: float = 300.0
    time_seconds_per_gib: float = 300.0
    max_open_files: int = 256

    def time_limit(self, upload_bytes: int) -> float:
        return self.time_base_seconds + self.time_seconds_per_gib * upload_bytes / GiB

    def memory_limit(self, upload_bytes: int) -> int | None:
        if self.memory_base_bytes is None:
            return None
        return self.memory_base_bytes + int(self.memory_per_upload_byte * upload_bytes)


class _Child:
    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process, self.conn = process, conn

    def stop(self) -> None:
        """Kill without asking (it may be stuck in C code) and reap it."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()


class IngestPool:
    """Up to ``size`` ingest children; callers beyond that wait for one to be free."""

    def __init__(
        self,
        *,
        size: int,
        architecture_modules: list[str],
        limits: ProcessLimits,
        hf_shard_bytes: int = DEFAULT_HF_SHARD_BYTES,
    ) -> None:
        self.size = size
        self.hf_shard_bytes = hf_shard_bytes
        self.architecture_modules = list(architecture_modules)
        self.limits = limits
        # "module:function" the child calls at each ingest stage. Only tests set it (there is no
        # setting or environment variable for it): it is how they crash a child mid-ingest.
        self.fault_hook: str | None = None
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._closed = False

    def prestart(self) -> None:
        """Start the fork server and one child in the background (``serve``), so the first upload
        does not wait for torch to import."""
        threading.Thread(target=self._prestart, name="ingest-prestart", daemon=True).start()

    def _prestart(self) -> None:
        try:
            started = self._start_child()
        except Exception:
            log.exception("could not start an ingest process; uploads will try again")
            return
        with self._lock:
            if self._closed:
                started.stop()
            else:
                self._idle.append(started)

    def ingest(
        self,
        *,
        upload: Path,
        architecture: Architecture,
        config: Mapping[str, Any],
        workdir: Path,
        limits: ReadLimits,
    ) -> IngestResult:
        size = upload_bytes(upload)
        timeout = self.limits.time_limit(size)
        request = child.IngestRequest(
            upload=upload,
            workdir=workdir,
            architecture=architecture.name,
            registration=architecture.registration,
            config=dict(config),
            limits=limits,
            memory_bytes=self.limits.memory_limit(size),
            # A backstop for a child the parent could not kill in time: every core busy until the deadline.
            cpu_seconds=math.ceil(timeout * (os.cpu_count() or 1)) + 1,
            fault_hook=self.fault_hook,
            hf_shard_bytes=self.hf_shard_bytes,
        )
        with self._slots:
            worker = self._take()
            keep = False
            try:
                reply = self._exchange(worker, request, timeout)
                keep = reply[0] in ("ok", "refused")
            finally:
                self._give_back(worker, keep=keep)
        return _result(reply)

    def probe(self, recipe: Recipe) -> Probed:
        """``app.architectures.probe.probe`` in a child, under the base memory and time limits:
        a constructor that allocates from config values costs that child, never this process."""
        seconds = min(PROBE_SECONDS, self.limits.time_base_seconds)
        request = child.ProbeRequest(
            recipe=recipe,
            memory_bytes=self.limits.memory_base_bytes,
            cpu_seconds=math.ceil(seconds * (os.cpu_count() or 1)) + 1,
        )
        with self._slots:
            worker = self._take()
            keep = False
            try:
                reply = self._exchange(worker, request, seconds)
                keep = reply[0] in ("ok", "refused")
            except IngestFailed as exc:
                raise InvalidArchitecture(
                    "Building this model to count its parameters went over the server's limits "
                    f"({exc.details.get('reason') or exc.details.get('signal') or 'time'}); "
                    "a smaller config is needed.",
                    {
                        **exc.details,
                        "memory_limit_bytes": request.memory_bytes,
                        "time_limit_seconds": seconds,
                    },
                ) from None
            finally:
                self._give_back(worker, keep=keep)
        if reply[0] == "ok":
            probed: Probed = reply[1]
            return probed
        try:
            _result(reply)  # raises what the child answered
        except IngestCrashed as exc:
            raise InvalidArchitecture(
                "Building this model to count its parameters needed more memory than the server allows; "
                "a smaller config is needed.",
                {**exc.details, "memory_limit_bytes": request.memory_bytes},
            ) from None
        raise RuntimeError(f"unexpected reply from the ingest process: {reply[0]}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            children = self._idle + list(self._busy)
            self._idle = []
        for worker in children:
            worker.stop()

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise IngestCrashed("The server is shutting down; upload again.")
            worker = self._idle.pop() if self._idle else None
        if worker is None or not worker.process.is_alive():
            if worker is not None:
                worker.stop()
            worker = self._start_child()
        with self._lock:
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Child, *, keep: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            if keep and not self._closed:
                self._idle.append(worker)
                return
        worker.stop()

    def _start_child(self) -> _Child:
        context = _context()
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=child.serve,
            args=(child_end, self.architecture_modules, self.limits.max_open_files),
            name="weightvault-ingest",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Child(process, parent_end)

    def _exchange(
        self, worker: _Child, request: child.IngestRequest | child.ProbeRequest, timeout: float
    ) -> tuple[Any, ...]:
        started = time.monotonic()
        # A child that died before reading: the wait below reports how.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError):
            worker.conn.send(request)
        deadline = started + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                worker.stop()
                log.error(
                    "ingest of %s exceeded its time limit of %.0f s; killed its process (pid %s)",
                    request.label,
                    timeout,
                    worker.process.pid,
                )
                raise IngestTimeout(
                    f"Checking the checkpoint took longer than its limit of {timeout:.0f} seconds; "
                    "it was stopped and nothing was kept.",
                    {"time_limit_seconds": round(timeout, 3)},
                )
            ready = wait([worker.conn, worker.process.sentinel], timeout=remaining)
            if worker.conn in ready:
                try:
                    reply: tuple[Any, ...] = worker.conn.recv()
                except (EOFError, OSError):
                    pass  # died; the sentinel tells how
                else:
                    if reply[0] == "out_of_memory":
                        _log_memory(request, worker, reply[1])
                    return reply
            if worker.process.sentinel in ready or not worker.process.is_alive():
                worker.process.join(timeout=10)
                raise _died(request, worker, time.monotonic() - started)


def _result(reply: tuple[Any, ...]) -> IngestResult:
    kind = reply[0]
    if kind == "ok":
        result: IngestResult = reply[1]
        return result
    if kind == "refused":
        error_class, message, details = reply[1], reply[2], reply[3]
        if isinstance(error_class, type) and issubclass(error_class, WeightvaultError):
            raise error_class(message, details)
    if kind == "out_of_memory":
        raise IngestCrashed(
            "Checking the checkpoint needed more memory than its limit allows; nothing was kept.",
            {"reason": "memory_limit"},
        )
    raise RuntimeError(f"the ingest process failed:\n{reply[1] if len(reply) > 1 else reply}")


def _died(
    request: child.IngestRequest | child.ProbeRequest, worker: _Child, seconds: float
) -> WeightvaultError:
    code = worker.process.exitcode
    signum = -code if code is not None and code < 0 else None
    name = signal.Signals(signum).name if signum is not None and signum in signal.valid_signals() else None
    log.error(
        "ingest process (pid %s) died after %.1f s reading %s: %s; it is replaced",
        worker.process.pid,
        seconds,
        request.label,
        name or f"exit code {code}",
    )
    if signum == signal.SIGXCPU:
        return IngestTimeout(
            "Checking the checkpoint used more CPU time than its limit; it was stopped and nothing was kept.",
            {"reason": "cpu_limit"},
        )
    return IngestCrashed(
        "The process checking the checkpoint crashed"
        f" ({name or f'exit code {code}'}); nothing was kept. The file may be malformed.",
        {"signal": name} if name else {"exit_code": code},
    )


def _log_memory(request: child.IngestRequest | child.ProbeRequest, worker: _Child, text: str) -> None:
    log.error(
        "ingest of %s went over its memory limit of %s bytes in process %s (%s); it is replaced",
        request.label,
        request.memory_bytes,
        worker.process.pid,
        text,
    )


_context_lock = threading.Lock()


def _context() -> ForkServerContext:
    # The fork server imports torch and the ingest code once (preload); every child is a fork of it.
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, ForkServerContext)
    with _context_lock:
        context.set_forkserver_preload(["app.checkpoints.child"])
        # The fork server runs `python -c ...`, which puts the current folder first on sys.path (and
        # Python 3.11 ignores the sys.path it is handed): started from a project with its own `app`
        # package, it would import that instead of ours. PYTHONSAFEPATH (what -P sets) leaves it out.
        previous = os.environ.get("PYTHONSAFEPATH")
        os.environ["PYTHONSAFEPATH"] = "1"
        try:
            forkserver.ensure_running()
        finally:
            if previous is None:
                del os.environ["PYTHONSAFEPATH"]
            else:
                os.environ["PYTHONSAFEPATH"] = previous
    return context
