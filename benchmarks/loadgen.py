"""Concurrent GETs for a fixed time: requests/s, p50 and p99 latency.

Uses ``wrk`` (Debian's package) when installed: a C client costs the 2-core machine far less than the
server it measures. Without it, Python threads with one keep-alive httpx client each (slower; the
results say which tool ran). Both alternate over the given paths, loopback only, and stop by themselves.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


@dataclass(frozen=True)
class LoadResult:
    tool: str
    clients: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def _duration(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str, clients: int, seconds: float) -> LoadResult:
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    done = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if not (done and rps and "50" in percentiles and "99" in percentiles):
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult(
        tool="wrk",
        clients=clients,
        seconds=_duration(done.group(2)),
        requests=int(done.group(1)),
        errors=errors,
        rps=float(rps.group(1)),
        p50_ms=_duration(percentiles["50"]) * 1000,
        p99_ms=_duration(percentiles["99"]) * 1000,
    )


def run_wrk(url: str, paths: list[str], clients: int, seconds: float) -> LoadResult:
    binary = wrk_binary()
    assert binary is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA % ", ".join(f'"{p}"' for p in paths))
    try:
        command = [binary, "-t", str(min(2, clients)), "-c", str(clients), "-d", f"{seconds:g}s"]
        command += ["--latency", "--timeout", "10s", "-s", script.name, url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    finally:
        Path(script.name).unlink(missing_ok=True)
    return parse_wrk(done.stdout, clients, seconds)


def run_threads(url: str, paths: list[str], clients: int, seconds: float) -> LoadResult:
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(slot: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            start.wait()
            i = slot
            while time.perf_counter() < deadline[0]:
                began = time.perf_counter()
                try:
                    ok = http.get(paths[i % len(paths)]).status_code < 400
                except httpx.HTTPError:
                    ok = False
                latencies[slot].append(time.perf_counter() - began)
                errors[slot] += not ok
                i += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.perf_counter() - began
    every = sorted(x for per in latencies for x in per)
    if not every:
        raise RuntimeError("no request completed")
    return LoadResult(
        tool="python-threads",
        clients=clients,
        seconds=elapsed,
        requests=len(every),
        errors=sum(errors),
        rps=len(every) / elapsed,
        p50_ms=statistics.median(every) * 1000,
        p99_ms=every[min(len(every) - 1, int(len(every) * 0.99))] * 1000,
    )


def run(url: str, paths: list[str], clients: int, seconds: float) -> LoadResult:
    if wrk_binary():
        return run_wrk(url, paths, clients, seconds)
    return run_threads(url, paths, clients, seconds)
