"""Benchmark inputs: float32 state_dicts of a given size and small ones for each built-in architecture.

As a module it is also a command, so the harness can build checkpoints in a child process
(``python -m benchmarks.data size 1G out.pt`` / ``python -m benchmarks.data arch cnn out.pt --seed 2``);
it prints the model config as JSON on its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

MiB = 1024**2
GiB = 1024**3
WIDE = 8192  # one 8192x8192 float32 layer is 256 MiB
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": MiB, "G": GiB}


def parse_size(text: str) -> int:
    """``100M``, ``1G``, ``4G``, ``512MiB`` -> bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 100M, 1G, 4G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def size_label(size: int) -> str:
    if size % GiB == 0:
        return f"{size // GiB} GiB"
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size / MiB:.1f} MiB"


def size_key(size: int) -> str:
    return size_label(size).replace(" GiB", "G").replace(" MiB", "M")


def mlp_config_for(size: int) -> dict[str, Any]:
    """An ``mlp`` config whose float32 weights take ``size`` bytes (biases add a few KiB).

    Multiples of 256 MiB are 8192-wide square layers; other sizes one square layer of the matching width.
    """
    layer = WIDE * WIDE * 4
    if size >= layer and size % layer == 0:
        count = size // layer
        return {"in_features": WIDE, "hidden_sizes": [WIDE] * (count - 1), "out_features": WIDE}
    width = max(64, int(math.sqrt(size / 4)) // 64 * 64)
    return {"in_features": width, "hidden_sizes": [], "out_features": width}


def make_sized(path: Path, size: int, seed: int = 0) -> dict[str, Any]:
    """``torch.save(state_dict)`` of an mlp holding ``size`` bytes of float32 weights."""
    import torch

    from app.architectures.builtin import MLP_ARCH

    config = MLP_ARCH.effective_config(mlp_config_for(size))
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in MLP_ARCH.build(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        bound = 1.0 / math.sqrt(shape[-1])
        state[name] = torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
    torch.save(state, path)
    return config


def make_arch(path: Path, name: str, seed: int = 0) -> dict[str, Any]:
    """``torch.save(state_dict)`` of a built-in architecture with its default config, seeded."""
    import torch

    from app.architectures.builtin import ARCHITECTURES

    architecture = next(a for a in ARCHITECTURES if a.name == name)
    config = architecture.effective_config({})
    torch.manual_seed(seed)
    torch.save(architecture.build(config).state_dict(), path)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    sized = sub.add_parser("size")
    sized.add_argument("size")
    sized.add_argument("out", type=Path)
    sized.add_argument("--seed", type=int, default=0)
    arch = sub.add_parser("arch")
    arch.add_argument("name")
    arch.add_argument("out", type=Path)
    arch.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "size":
        config = make_sized(args.out, parse_size(args.size), args.seed)
    else:
        config = make_arch(args.out, args.name, args.seed)
    print(json.dumps(config))


if __name__ == "__main__":
    main()
