"""Write the stored variants of a state_dict: weights as safetensors and .pt, and the full checkpoint."""

from __future__ import annotations

import os
from collections import OrderedDict
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


def own_storages(value: Any, _seen: dict[int, Any] | None = None) -> Any:
    """``value`` with every tensor on a storage of exactly its own bytes.

    torch.save writes a tensor's whole storage: a weight viewing part of one (a memory-mapped upload, a
    crafted storage with a tail no tensor uses) would carry bytes that are no tensor's into a served
    file. A contiguous tensor gets a zero-copy slice of its storage; only a non-contiguous one is copied.
    Shared objects stay shared (tied weights remain one tensor). Containers are at most
    ``structure.MAX_DEPTH`` deep by the time this runs.
    """
    seen = {} if _seen is None else _seen
    if id(value) in seen:
        return seen[id(value)]
    result: Any
    if isinstance(value, torch.Tensor):
        result = _own_storage(value.detach())
    elif isinstance(value, dict):
        result = type(value)() if type(value) in (dict, OrderedDict) else {}
        seen[id(value)] = result
        for key, item in value.items():
            result[key] = own_storages(item, seen)
        return result
    elif isinstance(value, list):
        result = []
        seen[id(value)] = result
        result.extend(own_storages(item, seen) for item in value)
        return result
    elif isinstance(value, tuple) and type(value) is tuple:
        result = tuple(own_storages(item, seen) for item in value)
    else:
        result = value
    seen[id(value)] = result
    return result


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    nbytes = tensor.numel() * tensor.element_size()
    storage = tensor.untyped_storage()
    if tensor.storage_offset() == 0 and storage.nbytes() == nbytes and tensor.is_contiguous():
        return tensor
    if not tensor.is_contiguous():
        return tensor.contiguous()
    start = tensor.storage_offset() * tensor.element_size()
    piece = storage[start : start + nbytes]
    return torch.empty((0,), dtype=tensor.dtype).set_(piece, 0, tensor.shape, tensor.stride())


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
