"""A BERT-base-sized model (built from its config, about 110 M parameters) through a real server.

    .venv/bin/python -m benchmarks.bert_base [--workdir DIR] [--no-onnx]

Starts ``weightvault serve`` (SQLite, one conversion worker), registers ``BertModel`` from the bert-base
config over HTTP, pushes the ``save_pretrained`` folder with the client (one tar; ingest reads it, proves
full/weights/hf), then converts it to ONNX (dynamic batch and sequence, checked in onnxruntime). Prints the
wall times, the folder's size and the server tree's peak anonymous memory (RssAnon summed over the API
process, its ingest children and the worker) above what it held before the push.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import servers
from benchmarks.memory import read_status, tree_pids


class TreeAnonPeak:
    """Peak of the summed RssAnon of a process tree, sampled every 50 ms."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.start = self._sample()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for pid in tree_pids(self.root):
            try:
                total += read_status(pid).get("RssAnon", 0)
            except OSError:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> TreeAnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()

    import torch
    import transformers

    from weightvault import Client, ConversionFailed

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        workdir = Path(work)
        config = transformers.BertConfig()  # bert-base-uncased's dimensions
        config.architectures = ["BertModel"]
        torch.manual_seed(0)
        started = time.perf_counter()
        model = transformers.BertModel(config).eval()
        folder = workdir / "bert-base"
        model.save_pretrained(folder)
        prepared = time.perf_counter() - started
        parameters = sum(p.numel() for p in model.parameters())
        folder_bytes = sum(p.stat().st_size for p in folder.iterdir())
        del model

        result: dict[str, Any] = {
            "parameters": parameters,
            "folder_bytes": folder_bytes,
            "save_pretrained_seconds": round(prepared, 2),
        }
        with (
            servers.weightvault(workdir, conversion_workers=0 if args.no_onnx else 1, tag="bert") as server,
            Client(server.url, cache_dir=workdir / "cache", progress=False, timeout=None) as client,
        ):
            started = time.perf_counter()
            client.register_architecture("bert-base", config=config.to_dict())
            result["register_seconds"] = round(time.perf_counter() - started, 2)
            client.create_model("bert", "bert-base")
            with TreeAnonPeak(server.process.pid) as memory:
                started = time.perf_counter()
                version = client.push("bert", folder)
                result["push_seconds"] = round(time.perf_counter() - started, 2)
            result["server_anon_growth_mib"] = round((memory.peak - memory.start) / 2**20, 1)
            result["artifacts"] = {f"{a.kind}/{a.format}": a.size for a in version.artifacts}
            if not args.no_onnx:
                started = time.perf_counter()
                job = client.convert("bert:1")
                try:
                    job = client.wait(job, timeout=3600)
                except ConversionFailed:
                    job = client.get_job(job.id)
                result["onnx_seconds"] = round(time.perf_counter() - started, 2)
                result["onnx_status"] = job.status
                report = job.raw.get("report") or {}
                result["onnx_report"] = {
                    key: report.get(key)
                    for key in ("exporter", "opset", "checked", "max_abs_diff", "inputs", "outputs")
                }
                if job.raw.get("error"):
                    result["onnx_error"] = job.raw["error"]
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
