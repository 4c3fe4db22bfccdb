"""What a running server holds: settings, the database, the blob store and the architecture registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.architectures.registry import ArchitectureRegistry, load_registry
from app.architectures.service import DatabaseRegistrations
from app.checkpoints.limits import ReadLimits
from app.checkpoints.pool import IngestPool, ProcessLimits
from app.db.engine import (
    HeldReadConnection,
    is_file_sqlite,
    make_engine,
    make_read_engine,
    make_sessionmaker,
)
from app.db.loop_reads import PostgresLoopReads
from app.db.migrate import upgrade
from app.settings import Settings
from app.storage.blobstore import BlobStore
from app.versions.receive import UploadLimits


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    registry: ArchitectureRegistry
    # The hot reads' own engine (app.db.engine.make_read_engine), and whether they run on the event loop
    # (SQLite in a file) rather than in the thread pool.
    read_engine: Engine
    reads_on_loop: bool
    loop_reads: HeldReadConnection = field(init=False)
    # PostgreSQL: the hot reads' async connections, used on the event loop (None on SQLite).
    postgres_loop_reads: PostgresLoopReads | None = field(init=False)
    # Started lazily (or by ``prestart`` in the app's lifespan): tools that open a runtime never fork.
    ingester: IngestPool = field(init=False)

    def __post_init__(self) -> None:
        self.loop_reads = HeldReadConnection(self.read_engine)
        self.postgres_loop_reads = (
            PostgresLoopReads(self.read_engine) if self.read_engine.dialect.name == "postgresql" else None
        )
        self.ingester = IngestPool(
            size=self.settings.ingest_processes,
            architecture_modules=self.settings.architecture_modules,
            limits=ProcessLimits(
                memory_base_bytes=self.settings.ingest_memory_base_bytes,
                memory_per_upload_byte=self.settings.ingest_memory_per_upload_byte,
                time_base_seconds=self.settings.ingest_time_limit_base_seconds,
                time_seconds_per_gib=self.settings.ingest_time_limit_seconds_per_gib,
                max_open_files=self.settings.ingest_max_open_files,
            ),
            hf_shard_bytes=self.settings.hf_shard_bytes,
        )

    @property
    def read_limits(self) -> ReadLimits:
        return ReadLimits(
            max_tensors=self.settings.max_tensors,
            max_pickle_bytes=self.settings.max_pickle_bytes,
            max_safetensors_header_bytes=self.settings.max_safetensors_header_bytes,
            max_extra_file_bytes=self.settings.max_extra_file_bytes,
            max_extra_files=self.settings.max_extra_files,
            max_unpacked_bytes=self.settings.max_upload_bytes,
        )

    @property
    def upload_limits(self) -> UploadLimits:
        return UploadLimits(
            max_upload_bytes=self.settings.max_upload_bytes,
            max_metadata_bytes=self.settings.max_metadata_bytes,
            idle_timeout_seconds=self.settings.upload_idle_timeout_seconds,
            deadline_base_seconds=self.settings.upload_deadline_base_seconds,
            min_bytes_per_second=self.settings.upload_min_bytes_per_second,
            max_form_parts=self.settings.max_form_parts,
        )

    def database_ok(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.ingester.close()
        self.loop_reads.close()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
        self.engine.dispose()
        self.store.close()


def open_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Create the data dir, clean staging leftovers, apply migrations and connect."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = BlobStore(settings.data_dir)
    store.initialise()
    if migrate:
        upgrade(settings.effective_database_url)
    url = settings.effective_database_url
    engine = make_engine(url)
    in_memory = url.startswith("sqlite") and not is_file_sqlite(url)
    return Runtime(
        settings=settings,
        engine=engine,
        read_engine=engine if in_memory else make_read_engine(url),
        reads_on_loop=is_file_sqlite(url),
        sessions=make_sessionmaker(engine),
        store=store,
        registry=load_registry(settings.architecture_modules, DatabaseRegistrations(engine)),
    )
