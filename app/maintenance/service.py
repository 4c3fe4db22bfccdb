"""``fsck`` proves every row has its intact file and lists files no row needs; ``gc`` removes those."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts.models import Artifact
from app.models.models import RegisteredModel
from app.storage.blobstore import BlobStore, sha256_file
from app.versions.models import Version


@dataclass
class FsckReport:
    checked_blobs: int = 0
    checked_rows: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Blobs no artifact references (left by deletes until gc runs): information, not a problem.
    unreferenced_blobs: list[Path] = field(default_factory=list)
    unreferenced_bytes: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems


def fsck(*, session: Session, store: BlobStore, rehash: bool = True) -> FsckReport:
    """Re-hash every blob, and match artifact rows and blobs both ways."""
    report = FsckReport()
    rows = session.execute(
        select(
            Artifact.sha256,
            Artifact.size,
            Artifact.kind,
            Artifact.format,
            Version.number,
            RegisteredModel.name,
        )
        .join(Version, Artifact.version_id == Version.id)
        .join(RegisteredModel, Version.model_id == RegisteredModel.id)
    ).all()
    referenced: dict[str, list[str]] = {}
    for sha256, size, kind, fmt, number, model in rows:
        report.checked_rows += 1
        where = f"{model} v{number} {kind}/{fmt}"
        referenced.setdefault(sha256, []).append(where)
        path = store.path_for(sha256)
        if not path.is_file():
            report.problems.append(f"missing file: {where} needs blob {sha256}, which is not on disk")
        elif path.stat().st_size != size:
            report.problems.append(
                f"size mismatch: {where} records {size} bytes, blob {sha256} has {path.stat().st_size}"
            )
    for name, path in store.iter_blobs():
        report.checked_blobs += 1
        try:
            size = path.stat().st_size
            # Unreferenced blobs are hashed too: an upload of the same content would claim the file as is.
            corrupt = rehash and sha256_file(path) != name
        except FileNotFoundError:
            continue  # a concurrent gc removed it since the listing
        if corrupt:
            report.problems.append(f"corrupt blob: {path} does not hash to its name")
        if name not in referenced:
            report.unreferenced_blobs.append(path)
            report.unreferenced_bytes += size
    for leftover in store.leftovers():
        report.notes.append(f"staging leftover of a stopped process: {leftover} (removed at the next start)")
    return report


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    kept_recent: list[str] = field(default_factory=list)
    freed_bytes: int = 0


def gc(*, session: Session, store: BlobStore, grace_seconds: float, dry_run: bool = False) -> GcReport:
    """Remove blobs that no artifact references and that nobody touched within ``grace_seconds``
    (an upload in flight touches the blob it is about to reference)."""
    report = GcReport()
    referenced = set(session.scalars(select(Artifact.sha256).distinct()))
    session.rollback()
    now = time.time()
    for name, path in store.iter_blobs():
        if name in referenced:
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if now - stat.st_mtime < grace_seconds:
            report.kept_recent.append(name)
            continue
        # Re-check under no lock but just before removal: a row committed since the scan keeps its blob.
        if session.scalar(select(Artifact.id).where(Artifact.sha256 == name).limit(1)) is not None:
            continue
        if not dry_run:
            path.unlink(missing_ok=True)
        report.removed.append(name)
        report.freed_bytes += stat.st_size
    session.rollback()
    return report
