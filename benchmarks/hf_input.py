"""A GPT-2 state_dict of about a given size, for the ``hf`` download (a transformers architecture).

    python -m benchmarks.hf_input 256M out.pt

Built from a config (1024 wide, as many layers as the size allows; nothing is downloaded), saved with
``torch.save``; prints the transformers config to register as JSON on its last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.data import parse_size

WIDTH = 1024
LAYER_BYTES = 12 * WIDTH * WIDTH * 4  # attention (4 d^2) and MLP (8 d^2) float32 weights per block


def make(path: Path, size: int, seed: int = 0) -> dict[str, Any]:
    import torch
    import transformers

    config = transformers.GPT2Config(
        vocab_size=1024,
        n_embd=WIDTH,
        n_head=16,
        n_layer=max(1, round(size / LAYER_BYTES)),
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    config.architectures = ["GPT2Model"]
    torch.manual_seed(seed)
    model = transformers.GPT2Model(config).eval()
    torch.save(model.state_dict(), path)
    registered: dict[str, Any] = config.to_dict()
    return registered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("size")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(json.dumps(make(args.out, parse_size(args.size))))


if __name__ == "__main__":
    main()
