"""Settings read from the environment (``WEIGHTVAULT_*``) and ``.env``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GiB = 1024**3
MiB = 1024**2


class Settings(BaseSettings):
    """Everything the server reads from its environment; one instance per process (see ``get_settings``)."""

    model_config = SettingsConfigDict(env_prefix="WEIGHTVAULT_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./storage")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # None: one API process per usable core, at most MAX_DEFAULT_API_WORKERS (see default_api_workers).
    api_workers: int | None = Field(default=None, ge=1, le=64)
    log_level: str = "info"
    log_json: bool | None = None  # None: JSON lines unless stderr is a terminal
    database_url: str | None = None
    # None: on when `serve` binds a non-loopback address, off otherwise.
    auth: Literal["off", "on"] | None = None
    max_upload_bytes: int = Field(default=16 * GiB, gt=0)
    max_metadata_bytes: int = Field(default=64 * 1024, gt=0)
    max_tensors: int = Field(default=100_000, gt=0)
    max_pickle_bytes: int = Field(default=64 * MiB, gt=0)
    max_safetensors_header_bytes: int = Field(default=100 * MiB, gt=0)
    max_page_size: int = Field(default=500, gt=0, le=10_000)
    # Per API process: recent version reads and pages, kept until the model's next write (0: none kept).
    read_cache_bytes: int = Field(default=64 * MiB, ge=0)
    # How long an API process may reuse a kept read's stamp without asking the database; every other
    # API answer waits this long before it is sent (app.api.stamp_leases). 0: ask on every read.
    read_lease_ms: float = Field(default=5.0, ge=0, le=60_000)
    max_form_parts: int = Field(default=256, ge=2, le=2000)
    # A model folder upload keeps at most this many extra files (tokenizer, generation config), each at
    # most this large; the hf artifact's model.safetensors is sharded past hf_shard_bytes.
    max_extra_files: int = Field(default=64, ge=0, le=1024)
    max_extra_file_bytes: int = Field(default=16 * MiB, gt=0)
    hf_shard_bytes: int = Field(default=5_000_000_000, gt=0)
    architecture_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Libraries whose model classes or constructors POST /v1/architectures may name (docs/architectures.md).
    architecture_libraries: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["transformers"])
    # A registration whose model would have more parameters than this is refused (counted on the meta device).
    max_architecture_parameters: int = Field(default=20_000_000_000, gt=0)
    upload_idle_timeout_seconds: float = Field(default=60.0, gt=0)
    # An upload must finish within base + bytes / min rate seconds: a steady drip never goes idle.
    # Resumable (tus) uploads: an unfinished one is freed after this long; each token may keep this many open.
    upload_session_ttl_seconds: float = Field(default=24 * 3600.0, gt=0)
    max_open_uploads_per_token: int = Field(default=32, ge=1)
    upload_deadline_base_seconds: float = Field(default=300.0, gt=0)
    upload_min_bytes_per_second: float = Field(default=64 * 1024, gt=0)
    # A client must send a request's headers this soon after connecting or after its request's first
    # byte; uvicorn itself waits forever (slowloris).
    header_timeout_seconds: float = Field(default=20.0, gt=0)
    gc_grace_seconds: float = Field(default=3600.0, ge=0)
    conversion_workers: int = Field(default=1, ge=0, le=64)
    # Set by `serve` for its API processes: how many conversion workers it supervises, so /readyz can
    # report workers that fail to start. 0 (the default, e.g. workers on other machines): not checked.
    expected_conversion_workers: int = Field(default=0, ge=0, le=64)
    job_lease_seconds: float = Field(default=30.0, gt=0)
    job_time_limit_seconds: float = Field(default=900.0, gt=0)
    # Runs of a job, the first included, when its workers keep dying; stored with the job when submitted.
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    # Ingest (read, validate, write, prove) runs in this many reused child processes per API process,
    # each under limits: address space base + factor x upload size, open files, and a wall-clock (and
    # CPU-time) limit of base + seconds per GiB uploaded. See docs/design.md, "The ingest process".
    ingest_processes: int = Field(default=2, ge=1, le=64)
    ingest_prestart: bool = True
    ingest_memory_base_bytes: int = Field(default=4 * GiB, gt=0)
    ingest_memory_per_upload_byte: float = Field(default=4.0, ge=0)
    ingest_time_limit_base_seconds: float = Field(default=300.0, gt=0)
    ingest_time_limit_seconds_per_gib: float = Field(default=300.0, ge=0)
    ingest_max_open_files: int = Field(default=256, ge=32)
    # `weightvault worker` waits this long for its database (reachable, migrated) and data dir, then exits 1.
    worker_start_timeout_seconds: float = Field(default=60.0, ge=0)
    # A job still queued this long after it was submitted is failed as `no_worker`.
    job_queue_timeout_seconds: float = Field(default=3600.0, gt=0)
    # `weightvault serve` migrates once before starting its API processes and turns this off for them.
    migrate_on_start: bool = True

    @field_validator("architecture_modules", "architecture_libraries", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        # A comma-separated environment variable is friendlier than JSON for a list of module names.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'weightvault.db').resolve()}"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"


MAX_DEFAULT_API_WORKERS = 8


def default_api_workers() -> int:
    """API processes ``serve`` runs when not told: one per core this process may use, at most 8.

    An API process is one event loop: past one per core they only contend. The conversion workers and
    the ingest processes are mostly idle between uploads, so they do not count against the cores.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_API_WORKERS))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
