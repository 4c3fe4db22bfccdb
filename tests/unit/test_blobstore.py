"""The content-addressed store: durable puts, dedup claims, safe discards, crash leftovers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from app.storage.blobstore import BlobStore


def _stage(store: BlobStore, data: bytes) -> tuple[Path, str]:
    path = store.staging_root / f"staged-{hashlib.sha256(os.urandom(8)).hexdigest()[:8]}"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_put_stores_once_and_discard_undoes_only_unclaimed_creations(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.initialise()
    staged, sha = _stage(store, b"weights")
    first = store.put(staged, sha)
    assert first.created and store.path_for(sha).read_bytes() == b"weights"
    assert store.path_for(sha).relative_to(tmp_path).parts[:3] == ("blobs", "sha256", sha[:2])

    os.utime(store.path_for(sha), ns=(1, 1))  # make the creation time distinguishable from the claim
    first = first.__class__(sha256=sha, size=first.size, created=True, mtime_ns=1)
    staged_again, _ = _stage(store, b"weights")
    second = store.put(staged_again, sha)
    assert not second.created and not staged_again.exists()

    store.discard(first)  # the creator's upload failed, but the second upload claimed the same bytes
    assert store.path_for(sha).read_bytes() == b"weights"
    store.discard(second)  # a dedup put owns nothing to undo
    assert store.exists(sha)


def test_discard_removes_an_unclaimed_creation(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.initialise()
    staged, sha = _stage(store, b"lonely")
    store.discard(store.put(staged, sha))
    assert not store.exists(sha)
    assert [p.name for p in store.staging_root.iterdir()] == [".lock"]


def test_initialise_removes_leftovers_of_dead_processes_only(tmp_path: Path) -> None:
    alive = BlobStore(tmp_path)
    alive.initialise()
    (alive.staging_root / "in-flight").write_bytes(b"x")
    dead = tmp_path / "tmp" / "proc-1-deadbeef"
    dead.mkdir()
    (dead / ".lock").touch()
    (dead / "half-written").write_bytes(b"y")
    (tmp_path / "tmp" / "stray-file").write_bytes(b"z")

    other = BlobStore(tmp_path)
    other.initialise()
    assert not dead.exists() and not (tmp_path / "tmp" / "stray-file").exists()
    assert (alive.staging_root / "in-flight").exists()
    own = alive.staging_root
    alive.close()
    assert not own.exists(), "a clean shutdown removes the process's staging area"
