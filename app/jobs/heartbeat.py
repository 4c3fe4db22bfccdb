"""Conversion workers prove they are alive with a file they touch; /readyz reads them.

A worker that cannot start (a broken install, a module shadowed by the current folder) never touches
its file, so ``serve`` and ``/readyz`` can say so instead of leaving conversions queued in silence.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

# Workers beat at least this often (each loop turn, and from the lease keeper while a job runs).
BEAT_SECONDS = 5.0
# A beat older than this is a dead worker.
STALE_SECONDS = 60.0


def _folder(data_dir: Path) -> Path:
    return data_dir / "run" / "workers"


def beat(data_dir: Path, worker_id: str) -> None:
    folder = _folder(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / worker_id
    path.touch()
    os.utime(path)


def forget(data_dir: Path, worker_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (_folder(data_dir) / worker_id).unlink()


def _restarts_folder(data_dir: Path) -> Path:
    return data_dir / "run" / "restarts"


def record_restarts(data_dir: Path, supervisor_id: str, count: int) -> None:
    """A supervisor's running total of worker restarts, read by /metrics in the API processes."""
    folder = _restarts_folder(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{supervisor_id}.tmp"
    staged.write_text(str(count))
    staged.replace(folder / supervisor_id)


def restart_total(data_dir: Path) -> int:
    """Worker restarts counted by every supervisor that shares this data dir (dead ones included)."""
    folder = _restarts_folder(data_dir)
    if not folder.is_dir():
        return 0
    total = 0
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        with contextlib.suppress(FileNotFoundError, ValueError):
            total += int(entry.read_text())
    return total


def live_workers(data_dir: Path, within: float = STALE_SECONDS) -> int:
    folder = _folder(data_dir)
    if not folder.is_dir():
        return 0
    now = time.time()
    count = 0
    for entry in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if now - entry.stat().st_mtime <= within:
                count += 1
    return count
