"""Bytes at rest: what each upload adds to the store, against the old layout and MLflow-style storage.

    python -m benchmarks.at_rest [--layer-mib 16] [--layers 8]

Three scenarios on one fresh data dir (SQLite, the real service in-process, ingest in its child pool):
  (a) a state_dict of an mlp (``--layers`` square float32 layers of ``--layer-mib`` MiB each);
  (b) the same weights as a training checkpoint with Adam state (model, optimizer, epoch);
  (c) five fine-tunes of a frozen backbone (the same layers) with a new head each, as a second model.
For each upload: the store's growth (every file under blobs/), the tensor bytes no earlier upload had
(the issue's "new tensor bytes"), what the layout before recipes stored (its three whole files, each
once per distinct content: file-level dedup), and what MLflow stores (each upload as is, no dedup).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

MiB = 1024**2


def _tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layer-mib", type=int, default=16, help="MiB per square float32 layer (default 16)")
    parser.add_argument("--layers", type=int, default=8, help="layers in the mlp (default 8)")
    args = parser.parse_args()

    import torch
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    width = int((args.layer_mib * MiB / 4) ** 0.5)
    config = {"in_features": width, "hidden_sizes": [width] * (args.layers - 1), "out_features": width}

    def mlp(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        layers: list[torch.nn.Module] = []
        for index in range(args.layers):
            layers.append(torch.nn.Linear(width, width))
            if index < args.layers - 1:
                layers.append(torch.nn.ReLU())
        module = torch.nn.Module()
        module.layers = torch.nn.Sequential(*layers)
        return module

    def body(obj: Any) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    def tensor_shas(obj: Any) -> dict[str, int]:
        found: dict[str, int] = {}

        def walk(value: Any) -> None:
            if isinstance(value, torch.Tensor):
                data = value.detach().contiguous().numpy().tobytes()
                found[hashlib.sha256(data).hexdigest()] = len(data)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    walk(item)

        walk(obj)
        return found

    rows: list[tuple[str, int, int, int, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="at-rest-") as tmp:
        data_dir = Path(tmp) / "data"
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=data_dir,
            database_url=f"sqlite:///{tmp}/wv.db",
        )
        seen_tensors: set[str] = set()
        seen_files: set[str] = set()
        with TestClient(create_app(settings)) as client:
            for name in ("base", "finetunes"):
                reply = client.post(
                    "/v1/models", json={"name": name, "architecture": "mlp", "config": config}
                )
                assert reply.status_code == 201, reply.text

            def push(label: str, model: str, obj: Any) -> None:
                payload = body(obj)
                before = _tree_bytes(data_dir / "blobs")
                reply = client.post(
                    f"/v1/models/{model}/versions",
                    content=payload,
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert reply.status_code == 201, reply.text[:500]
                grown = _tree_bytes(data_dir / "blobs") - before
                tensors = tensor_shas(obj)
                new_tensor_bytes = sum(size for sha, size in tensors.items() if sha not in seen_tensors)
                seen_tensors.update(tensors)
                old = 0
                for artifact in reply.json()["artifacts"]:
                    if artifact["sha256"] not in seen_files:
                        seen_files.add(artifact["sha256"])
                        old += artifact["size"]
                rows.append((label, len(payload), new_tensor_bytes, grown, old, len(payload)))
                print(f"  {label}: +{grown / MiB:.1f} MiB", file=sys.stderr)

            base = mlp(0)
            optimizer = torch.optim.Adam(base.parameters(), lr=1e-3)
            base.layers(torch.randn(4, width)).pow(2).mean().backward()
            optimizer.step()
            state = base.state_dict()
            push("(a) state_dict", "base", state)
            push(
                "(b) same weights + Adam",
                "base",
                {"epoch": 1, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict()},
            )
            last = f"layers.{2 * (args.layers - 1)}"
            for tune in range(5):
                head = mlp(100 + tune).state_dict()
                tuned = {k: (head[k] if k.startswith(last + ".") else v) for k, v in state.items()}
                push(f"(c) fine-tune {tune + 1} (new head)", "finetunes", tuned)

    def mib(value: int) -> str:
        return f"{value / MiB:.1f}"

    print(f"mlp: {args.layers} layers of {width}x{width} float32 ({args.layer_mib} MiB each)\n")
    print(
        "| upload | upload MiB | new tensor MiB | recipes: store grows MiB | ratio to new tensors "
        "| old layout MiB | MLflow MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    totals = [0, 0, 0, 0, 0]
    for label, upload, new, grown, old, mlflow in rows:
        ratio = f"{grown / new:.3f}x" if new else f"+{grown / 1024:.0f} KiB"
        print(
            f"| {label} | {mib(upload)} | {mib(new)} | {mib(grown)} | {ratio} | {mib(old)} | {mib(mlflow)} |"
        )
        for index, value in enumerate((upload, new, grown, old, mlflow)):
            totals[index] += value
    upload, new, grown, old, mlflow = totals
    print(
        f"| **total** | {mib(upload)} | {mib(new)} | {mib(grown)} | {grown / new:.3f}x | {mib(old)} "
        f"({old / grown:.1f}x ours) | {mib(mlflow)} ({mlflow / grown:.1f}x ours) |"
    )


if __name__ == "__main__":
    main()
