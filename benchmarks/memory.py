"""Sample a process's resident memory from /proc while a request runs.

``VmRSS`` is everything resident (file-backed pages of memory-mapped checkpoints included); ``RssAnon``
is the anonymous part (heap, buffers, copies): the memory a server really spends on a request.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

INTERVAL_SECONDS = 0.02


def read_status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0]) * 1024
    return fields


def _reset_peak(pid: int) -> bool:
    # Writing 5 to clear_refs resets VmHWM, so the kernel's own peak covers exactly this window.
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class MemoryPeak:
    rss_start: int
    anon_start: int
    rss_peak: int
    anon_peak: int
    samples: int

    @property
    def anon_growth(self) -> int:
        return self.anon_peak - self.anon_start

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_start


class MemorySampler:
    """``with MemorySampler(pid) as sampler: ...`` then ``sampler.peak``."""

    def __init__(self, pid: int, interval: float = INTERVAL_SECONDS) -> None:
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"memory-{pid}")
        self._rss_peak = 0
        self._anon_peak = 0
        self._samples = 0
        self._hwm_reset = False
        self.peak: MemoryPeak | None = None

    def _sample(self) -> dict[str, int]:
        status = read_status(self.pid)
        self._rss_peak = max(self._rss_peak, status.get("VmRSS", 0))
        self._anon_peak = max(self._anon_peak, status.get("RssAnon", 0))
        self._samples += 1
        return status

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except (FileNotFoundError, ProcessLookupError):
                return

    def __enter__(self) -> MemorySampler:
        self._hwm_reset = _reset_peak(self.pid)
        start = self._sample()
        self._start = (start.get("VmRSS", 0), start.get("RssAnon", 0))
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            last = self._sample()
            if self._hwm_reset:
                self._rss_peak = max(self._rss_peak, last.get("VmHWM", 0))
        except FileNotFoundError:
            pass
        self.peak = MemoryPeak(
            rss_start=self._start[0],
            anon_start=self._start[1],
            rss_peak=self._rss_peak,
            anon_peak=self._anon_peak,
            samples=self._samples,
        )


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields after the last ')' are fixed.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time used so far by the live processes of a tree."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def tree_rss(root: int) -> tuple[int, int]:
    """(process count, summed VmRSS) of a process tree; shared pages are counted once per process."""
    pids = tree_pids(root)
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += read_status(pid).get("VmRSS", 0)
    return len(pids), total
