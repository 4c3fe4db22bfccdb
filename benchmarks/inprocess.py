"""The in-process side of the upload floor, run in a fresh child process per repeat.

Times, on the uploaded file already on disk (and in the page cache):
  load         torch.load(mmap=True, weights_only=True) + strict load into the architecture (meta + assign)
  safetensors  safetensors.torch.save_file of that state_dict, then fsync (part of the floor)
  ingest       app.checkpoints.ingest.ingest_checkpoint: the service's whole ingest without HTTP or the
               database (read, validate, forward, write full/safetensors/pt, reload and prove each)
and the anonymous memory each step added (and the ingest's CPU seconds). Prints one JSON object on its
last line.

    python -m benchmarks.inprocess --upload F.pt --architecture mlp --config '{...}' --workdir D
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.memory import MemorySampler


def _timed(step: Any) -> tuple[float, int]:
    seconds, _cpu, anon = _timed_cpu(step)
    return seconds, anon


def _timed_cpu(step: Any) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system, every thread: on a shared machine the steadier
    number) and anonymous memory growth of ``step``."""
    with MemorySampler(os.getpid()) as sampler:
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert sampler.peak is not None
    return seconds, cpu, sampler.peak.anon_growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upload", type=Path, required=True)
    parser.add_argument("--architecture", default="mlp")
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    from app.architectures.builtin import ARCHITECTURES
    from app.checkpoints.ingest import ingest_checkpoint
    from app.checkpoints.limits import ReadLimits
    from app.checkpoints.validate import load_fresh
    from app.settings import Settings

    architecture = next(a for a in ARCHITECTURES if a.name == args.architecture)
    config = architecture.effective_config(json.loads(args.config))
    settings = Settings(_env_file=None)
    limits = ReadLimits(
        max_tensors=settings.max_tensors,
        max_pickle_bytes=settings.max_pickle_bytes,
        max_safetensors_header_bytes=settings.max_safetensors_header_bytes,
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    held: dict[str, Any] = {}

    def load() -> None:
        state = torch.load(args.upload, map_location="cpu", weights_only=True, mmap=True)
        held["module"] = load_fresh(architecture, config, state)
        held["state"] = state

    def safetensors() -> None:
        path = args.workdir / "floor.safetensors"
        save_file(held["state"], str(path))
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())

    def ingest() -> None:
        stage = args.workdir / "ingest"
        stage.mkdir()
        ingest_checkpoint(
            upload=args.upload,
            architecture=architecture,
            config=config,
            workdir=stage,
            limits=limits,
        )

    load_seconds, load_anon = _timed(load)
    safetensors_seconds, safetensors_anon = _timed(safetensors)
    (args.workdir / "floor.safetensors").unlink()
    held.clear()
    ingest_seconds, ingest_cpu, ingest_anon = _timed_cpu(ingest)
    shutil.rmtree(args.workdir / "ingest")
    print(
        json.dumps(
            {
                "load_seconds": load_seconds,
                "load_anon_growth": load_anon,
                "safetensors_seconds": safetensors_seconds,
                "safetensors_anon_growth": safetensors_anon,
                "ingest_seconds": ingest_seconds,
                "ingest_cpu_seconds": ingest_cpu,
                "ingest_anon_growth": ingest_anon,
            }
        )
    )


if __name__ == "__main__":
    main()
