"""Write the stored variants of a state_dict: weights as safetensors and .pt, and the full checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from app.checkpoints.validate import Blueprint


def canonical_weights(weights: Mapping[str, torch.Tensor], plan: Blueprint) -> dict[str, torch.Tensor]:
    """The architecture's key order; tied keys share one tensor so every format keeps them tied."""
    canonical = {key: weights[key] for key in plan.expected}
    for group in plan.tied_groups:
        for name in group[1:]:
            canonical[name] = canonical[group[0]]
    return canonical


def write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` to ``path``, fsynced. (Hashing through a wrapper file object is slower than
    re-reading: torch then copies every storage through Python bytes.)"""
    with path.open("wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def write_full(path: Path, weights: dict[str, torch.Tensor], training_state: Mapping[str, Any]) -> None:
    """The classic resumable checkpoint: ``model_state_dict`` first, then the training entries."""
    write_torch(path, {"model_state_dict": weights, **training_state})


def write_safetensors(path: Path, weights: Mapping[str, torch.Tensor], plan: Blueprint) -> None:
    """safetensors cannot alias tensors: keep the first name of each tied group and record the others in
    the header metadata, exactly as ``safetensors.torch.save_model`` does, so ``load_model`` restores them."""
    removed = {name: group[0] for group in plan.tied_groups for name in group[1:]}
    tensors: dict[str, torch.Tensor] = {}
    seen_storage: set[tuple[int, int]] = set()
    for key, tensor in weights.items():
        if key in removed:
            continue
        tensor = tensor.contiguous()
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if storage in seen_storage and tensor.numel():
            tensor = tensor.clone()  # a view shared with another, untied key: give it its own bytes
        seen_storage.add(storage)
        tensors[key] = tensor
    save_file(tensors, str(path), metadata={"format": "pt", **removed})
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())
