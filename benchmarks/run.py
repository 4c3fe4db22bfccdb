"""Run the benchmarks: each workload against its baseline, in one process tree on this machine.

    .venv/bin/python -m benchmarks.run [--sizes 100M,1G,4G] [--repeats 3]
                                       [--only upload,download,pull,onnx,metadata,mlflow] [--quick]

Prints a markdown table of medians and ratios (stdout; progress goes to stderr) and writes the raw
samples to benchmarks/results/<timestamp>.json. Exits 1 when a workload failed to run, 0 otherwise:
a missed target is a finding, not a failure. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import loadgen, servers
from benchmarks.context import Context, say
from benchmarks.data import parse_size
from benchmarks.report import render, targets, write_json
from benchmarks.results import Results
from benchmarks.workloads import download, metadata, mlflow, onnx, pull, upload

WORKLOADS: dict[str, Callable[[Context], None]] = {
    "upload": upload.run,
    "download": download.run,
    "pull": pull.run,
    "onnx": onnx.run,
    "metadata": metadata.run,
    "mlflow": mlflow.run,
}
ARCHITECTURES = ["simple-linear", "mlp", "cnn", "transformer-encoder"]
HERE = Path(__file__).resolve().parent


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", help="state_dict sizes for upload (default 100M,1G,4G; quick: 100M)")
    parser.add_argument("--repeats", type=int, help="runs per measurement; medians are reported (default 3)")
    parser.add_argument("--only", help=f"comma-separated workloads (default all: {','.join(WORKLOADS)})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke: 100 MiB, one repeat, one ONNX architecture, 1 and 8 clients, no MLflow",
    )
    parser.add_argument(
        "--download-size", help="download/MLflow file size (default 1G if in --sizes, else the smallest)"
    )
    parser.add_argument("--onnx-archs", help=f"architectures to convert (default {','.join(ARCHITECTURES)})")
    parser.add_argument("--clients", help="metadata client counts (default 1,8,32)")
    parser.add_argument("--metadata-seconds", type=float, help="length of one metadata run (default 10)")
    parser.add_argument("--databases", help="metadata databases (default sqlite,postgresql)")
    parser.add_argument("--mlflow-venv", type=Path, default=HERE / ".venv-mlflow")
    parser.add_argument("--tmp", type=Path, help="parent of the run's temp dir (default: the system's)")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data) for a look")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = [parse_size(s) for s in _csv(args.sizes or ("100M" if quick else "100M,1G,4G"))]
    args.repeats = args.repeats or (1 if quick else 3)
    args.only = _csv(args.only) if args.only else [w for w in WORKLOADS if not (quick and w == "mlflow")]
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if args.download_size:
        args.download_size = parse_size(args.download_size)
    else:
        args.download_size = 1024**3 if 1024**3 in args.sizes else min(args.sizes)
    args.onnx_archs = _csv(args.onnx_archs) if args.onnx_archs else (["mlp"] if quick else ARCHITECTURES)
    args.clients = [int(c) for c in _csv(args.clients or ("1,8" if quick else "1,8,32"))]
    args.metadata_seconds = args.metadata_seconds or (3.0 if quick else 10.0)
    args.databases = _csv(args.databases or "sqlite,postgresql")
    return args


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else None


def describe_machine(args: argparse.Namespace) -> dict[str, object]:
    mem_kib = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    commit = _tool_version(["git", "-C", str(HERE.parent), "rev-parse", "HEAD"])
    # Read-only: --no-optional-locks keeps git from refreshing the index.
    changed = _tool_version(
        [
            "git",
            "--no-optional-locks",
            "-C",
            str(HERE.parent),
            "status",
            "--porcelain",
            "--untracked-files=no",
        ]
    )
    mlflow_python = args.mlflow_venv / "bin" / "python"
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "commit": commit,
        "uncommitted_changes": bool(changed),
        "cpus": os.cpu_count(),
        "memory": f"{mem_kib / 2**20:.1f} GiB RAM",
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "uvicorn": _version("uvicorn"),
        "safetensors": _version("safetensors"),
        "nginx": _tool_version([servers.nginx_binary() or "nginx", "-v"]),
        "wrk": _tool_version(["wrk", "-v"]) if loadgen.wrk_binary() else None,
        "mlflow": _tool_version([str(mlflow_python), "-c", "import mlflow; print(mlflow.__version__)"])
        if mlflow_python.exists()
        else None,
        "sizes": args.sizes,
        "download_size": args.download_size,
        "repeats": args.repeats,
        "workloads": args.only,
        "onnx_archs": args.onnx_archs,
        "clients": args.clients,
        "metadata_seconds": args.metadata_seconds,
        "quick": args.quick,
    }


def _load(triple: object) -> str:
    return "/".join(f"{x:.1f}" for x in triple) if isinstance(triple, tuple) else "?"


def _shown(path: Path) -> str:
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results()
    results.context = describe_machine(args)
    if args.tmp:
        args.tmp.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="weightvault-bench-", dir=args.tmp))
    say(f"temp dir {tmp}; workloads {','.join(args.only)}")
    ctx = Context(
        tmp=tmp,
        sizes=args.sizes,
        download_size=args.download_size,
        repeats=args.repeats,
        onnx_archs=args.onnx_archs,
        metadata_clients=args.clients,
        metadata_seconds=args.metadata_seconds,
        metadata_databases=args.databases,
        mlflow_venv=args.mlflow_venv,
        results=results,
    )
    started = time.perf_counter()
    elapsed: dict[str, float] = {}
    results.context["workload_seconds"] = elapsed
    try:
        for name in args.only:
            began = time.perf_counter()
            say(f"== {name}")
            try:
                WORKLOADS[name](ctx)
            except Exception as exc:
                results.error(f"{name}: {type(exc).__name__}: {str(exc).strip()[:2000]}")
                traceback.print_exc()
            elapsed[name] = round(time.perf_counter() - began, 1)
    finally:
        if args.keep_tmp:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results.context["total_seconds"] = round(time.perf_counter() - started, 1)
    results.context["load_average_at_end"] = os.getloadavg()
    wanted = targets(args.sizes, args.download_size, args.onnx_archs, args.clients)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.results_dir / f"{stamp}.json"
    write_json(results, wanted, out)
    header = (
        f"## weightvault benchmarks, {results.context['started']}"
        f"{' (quick smoke run)' if args.quick else ''}\n\n"
        f"`{results.context['command']}` at {str(results.context['commit'])[:12]}"
        f"{' (plus uncommitted changes)' if results.context['uncommitted_changes'] else ''}, "
        f"{results.context['cpus']} CPUs, {results.context['memory']}, {args.repeats} repeat(s), "
        f"{results.context['total_seconds']} s in all; load average "
        f"{_load(results.context['load_average_at_start'])} at the start, "
        f"{_load(results.context['load_average_at_end'])} at the end; raw samples in {_shown(out)}\n"
    )
    print(header)
    print(render(results, wanted))
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
