"""One-off check that a model past protobuf's 2 GB limit converts and travels as one zip.

    .venv/bin/python -m benchmarks.onnx_large [--layers 9]

Builds an `mlp` of 8192-wide float32 layers (9 layers: about 2.25 GiB of weights), runs the same
pure export + onnxruntime check the workers run, and prints the packaging, sizes, timings and the
worst difference. Needs about 12 GiB of memory and a few minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from app.architectures.builtin import MLP_ARCH
from app.onnx.export import export_and_check
from app.onnx.options import OnnxOptions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=9)
    args = parser.parse_args()
    width = 8192
    config = MLP_ARCH.effective_config(
        {"in_features": width, "hidden_sizes": [width] * (args.layers - 1), "out_features": width}
    )
    torch.manual_seed(0)
    with torch.no_grad():
        module = MLP_ARCH.build(config)
    weights = module.state_dict()
    size = sum(t.numel() * t.element_size() for t in weights.values())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = export_and_check(
            architecture=MLP_ARCH, config=config, weights=weights, options=OnnxOptions(), workdir=Path(work)
        )
        elapsed = time.perf_counter() - started
        with zipfile.ZipFile(result.path) if result.packaging == "zip" else _nothing() as bundle:
            members = {i.filename: i.file_size for i in bundle.infolist()} if bundle else {}
        print(
            json.dumps(
                {
                    "weights_bytes": size,
                    "packaging": result.packaging,
                    "served_file_bytes": result.path.stat().st_size,
                    "members": members,
                    "seconds": round(elapsed, 1),
                    "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
                    "report": {
                        k: result.report[k] for k in ("exporter", "opset", "batch_sizes", "max_abs_diff")
                    },
                },
                indent=2,
            )
        )


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
