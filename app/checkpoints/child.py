"""The ingest child process: receives requests over a pipe, ingests each under resource limits.

Runs in a process forked from multiprocessing's fork server (which imported this module, and torch with
it, once). Nothing here touches the database or HTTP; the parent side is ``app.checkpoints.pool``.
Replies are tuples, so an error keeps its ``details`` (exceptions pickle only their ``args``):

    ("ok", IngestResult)
    ("refused", error class, message, details)   a WeightvaultError: the same answer as in-process
    ("out_of_memory", text)                      over the address-space limit; the child is replaced
    ("failed", traceback text)                   any other exception (a server fault); replaced
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import resource
import signal
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from app.architectures.probe import Recipe, probe
from app.architectures.registry import ArchitectureRegistry, load_registry
from app.architectures.spec import Registration
from app.checkpoints.folder_artifact import DEFAULT_HF_SHARD_BYTES
from app.checkpoints.ingest import ingest_checkpoint
from app.checkpoints.limits import ReadLimits
from app.errors import WeightvaultError

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class IngestRequest:
    """What crosses the boundary: paths and small values, never tensor bytes."""

    upload: Path
    workdir: Path
    architecture: str
    config: dict[str, Any]
    limits: ReadLimits
    # Added to the child's address space at the start of this ingest (RLIMIT_AS), and CPU seconds
    # added to what it used so far (RLIMIT_CPU; SIGXCPU ends it). None: not limited.
    memory_bytes: int | None
    cpu_seconds: int | None
    # "module:function" called with each stage name and the upload's path; set only by tests
    # (``IngestPool.fault_hook``).
    fault_hook: str | None = None
    # A registered architecture's record: the child has no database, so it builds it from this.
    registration: Registration | None = None
    # Shard size of a model folder artifact (``hf``), WEIGHTVAULT_HF_SHARD_BYTES.
    hf_shard_bytes: int = DEFAULT_HF_SHARD_BYTES

    @property
    def label(self) -> str:
        return self.upload.name


@dataclass(frozen=True)
class ProbeRequest:
    """Check a registration (``app.architectures.probe``) under the same limits as an ingest."""

    recipe: Recipe
    memory_bytes: int | None
    cpu_seconds: int | None

    @property
    def label(self) -> str:
        return f"a {self.recipe.library} architecture"


def serve(conn: Connection, architecture_modules: list[str], max_open_files: int) -> None:
    """The child's main loop: one request at a time until the pipe closes or ``None`` arrives."""
    _die_with_parent()
    _set_limit(resource.RLIMIT_NOFILE, max_open_files, hard=max_open_files)
    registry = load_registry(architecture_modules)
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        conn.send(handle(request, registry))


def handle(request: IngestRequest | ProbeRequest, registry: ArchitectureRegistry) -> tuple[Any, ...]:
    try:
        if isinstance(request, ProbeRequest):
            with _limited(memory_bytes=request.memory_bytes, cpu_seconds=request.cpu_seconds):
                return ("ok", probe(request.recipe))
        with _limited(memory_bytes=request.memory_bytes, cpu_seconds=request.cpu_seconds):
            result = ingest_checkpoint(
                upload=request.upload,
                architecture=registry.get(request.architecture, registration=request.registration),
                config=request.config,
                workdir=request.workdir,
                limits=request.limits,
                on_stage=_hook(request.fault_hook, request.upload),
                hf_shard_bytes=request.hf_shard_bytes,
            )
    except WeightvaultError as exc:
        return ("refused", type(exc), exc.message, exc.details)
    except MemoryError as exc:
        return ("out_of_memory", f"{type(exc).__name__}: {exc}"[:500])
    except Exception as exc:
        # torch's CPU allocator reports a refused allocation as a RuntimeError, not MemoryError.
        if "not enough memory" in str(exc) or isinstance(exc, torch.OutOfMemoryError):
            return ("out_of_memory", f"{type(exc).__name__}: {exc}"[:500])
        return ("failed", traceback.format_exc()[-4000:])
    return ("ok", result)


@contextlib.contextmanager
def _limited(*, memory_bytes: int | None, cpu_seconds: int | None) -> Iterator[None]:
    # Soft limits only, raised again afterwards, so one child serves many ingests. They bound a
    # runaway in torch's or our reader's code; they are not a sandbox against code that runs here.
    if memory_bytes is not None:
        _set_limit(resource.RLIMIT_AS, _address_space() + memory_bytes)
    if cpu_seconds is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _set_limit(resource.RLIMIT_CPU, int(usage.ru_utime + usage.ru_stime) + 1 + cpu_seconds)
    try:
        yield
    finally:
        _set_limit(resource.RLIMIT_AS, resource.RLIM_INFINITY)
        _set_limit(resource.RLIMIT_CPU, resource.RLIM_INFINITY)


def _set_limit(which: int, soft: int, *, hard: int | None = None) -> None:
    _current_soft, current_hard = resource.getrlimit(which)
    if hard is None:
        hard = current_hard
    if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft > hard):
        soft = hard
    resource.setrlimit(which, (soft, hard))


def _address_space() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _die_with_parent() -> None:
    # The parent here is the fork server, which exits when the API process does: no orphans.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _hook(spec: str | None, upload: Path) -> Callable[[str], None] | None:
    if spec is None:
        return None
    module_name, _, function = spec.partition(":")
    hook: Callable[[str, Path], None] = getattr(importlib.import_module(module_name), function)
    return lambda stage: hook(stage, upload)
