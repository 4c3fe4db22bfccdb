"""Keep N worker processes running: start them, restart the ones that die, stop them all on a signal."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app.jobs import heartbeat

log = logging.getLogger("weightvault.supervisor")

QUICK_DEATH_SECONDS = 5.0
RESTART_BACKOFF_SECONDS = 2.0


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when its parent dies, however it dies (Linux
    PR_SET_PDEATHSIG), so workers never outlive their supervisor."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def worker_command() -> list[str]:
    return [sys.executable, "-P", "-m", "app", "worker", "--single"]


def supervise(processes: int, data_dir: Path | None = None) -> int:
    """Run until SIGTERM/SIGINT (or until this process's parent goes away).

    Restarts are counted in ``data_dir`` (``weightvault_conversion_worker_restarts_total``).
    """
    stopping = False
    supervisor_id = f"{socket.gethostname()}-{os.getpid()}"
    restarts = 0

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    parent = os.getppid()
    children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    while not stopping and os.getppid() == parent:
        for slot in range(processes):
            current = children.get(slot)
            if current is not None and current[0].poll() is None:
                continue
            if current is not None:
                process, started = current
                restarts += 1
                if data_dir is not None:
                    with contextlib.suppress(OSError):
                        heartbeat.record_restarts(data_dir, supervisor_id, restarts)
                log.warning(
                    "conversion worker %d (pid %d) exited with %s; restarting",
                    slot,
                    process.pid,
                    process.returncode,
                )
                if time.monotonic() - started < QUICK_DEATH_SECONDS:
                    log.error(
                        "conversion worker %d could not start (exit %s): conversions stay queued and "
                        "/readyz reports conversion_workers: false until it can; see its error above",
                        slot,
                        process.returncode,
                    )
                    time.sleep(RESTART_BACKOFF_SECONDS)
            children[slot] = (
                subprocess.Popen(worker_command(), preexec_fn=die_with_parent),
                time.monotonic(),
            )
        time.sleep(0.5)
    for process, _started in children.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 15
    for process, _started in children.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    return 0
