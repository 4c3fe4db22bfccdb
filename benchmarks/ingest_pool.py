"""The cost of the ingest process boundary: the same ingest in-process and through the pool.

Runs ``ingest_checkpoint`` on a file already on disk (and in the page cache) alternately in this process
and through a warm ``IngestPool`` child (same limits as the defaults), and prints the medians, their
ratio, and the address space one in-process ingest added (what the child's RLIMIT_AS must allow).

    python -m benchmarks.ingest_pool --upload F.pt --architecture mlp --config '{...}' --workdir D
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any


def _vm(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upload", type=Path, required=True)
    parser.add_argument("--architecture", default="mlp")
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from app.architectures.registry import load_registry
    from app.checkpoints.ingest import ingest_checkpoint
    from app.checkpoints.limits import ReadLimits
    from app.checkpoints.pool import IngestPool, ProcessLimits

    architecture = load_registry().get(args.architecture)
    config = architecture.effective_config(json.loads(args.config))
    limits = ReadLimits()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pool = IngestPool(size=1, architecture_modules=[], limits=ProcessLimits())

    def stage() -> Path:
        path = args.workdir / f"stage-{time.monotonic_ns()}"
        path.mkdir()
        return path

    def in_process() -> float:
        work = stage()
        started = time.perf_counter()
        ingest_checkpoint(
            upload=args.upload, architecture=architecture, config=config, workdir=work, limits=limits
        )
        seconds = time.perf_counter() - started
        shutil.rmtree(work)
        return seconds

    def through_pool() -> float:
        work = stage()
        started = time.perf_counter()
        pool.ingest(upload=args.upload, architecture=architecture, config=config, workdir=work, limits=limits)
        seconds = time.perf_counter() - started
        shutil.rmtree(work)
        return seconds

    before = _vm("VmSize")
    first = in_process()  # also warms this process (torch's thread pool, kernels)
    address_space = _vm("VmPeak") - before
    started = time.perf_counter()
    through_pool()  # starts the fork server and the child: not part of the steady state
    cold_pool = time.perf_counter() - started
    timings: dict[str, list[float]] = {"in_process": [], "pool": []}
    for _ in range(args.repeats):
        timings["in_process"].append(in_process())
        timings["pool"].append(through_pool())
    pool.close()
    medians = {key: statistics.median(values) for key, values in timings.items()}
    report: dict[str, Any] = {
        "upload_bytes": args.upload.stat().st_size,
        "first_in_process_seconds": first,
        "first_pool_seconds_with_start": cold_pool,
        "in_process_seconds": timings["in_process"],
        "pool_seconds": timings["pool"],
        "in_process_median": medians["in_process"],
        "pool_median": medians["pool"],
        "ratio": medians["pool"] / medians["in_process"],
        "in_process_address_space_growth": address_space,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
