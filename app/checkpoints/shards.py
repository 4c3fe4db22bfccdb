"""A state_dict split over several files (``save_pretrained`` shards), read as one under the single-file rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.checkpoints.limits import ReadLimits
from app.checkpoints.reader import LoadedCheckpoint, read_checkpoint
from app.errors import LimitExceeded, UnreadableCheckpoint


def read_shards(
    shards: Sequence[tuple[str, Path]],
    *,
    weight_map: Mapping[str, str] | None,
    limits: ReadLimits,
    module_classes: Iterable[type[nn.Module]] = (),
) -> LoadedCheckpoint:
    """Read every shard (each a flat state_dict, in one format) and merge them into one state_dict.

    ``shards`` pairs each file's name (as the index names it) with its path. With an index, each tensor
    must be in the shard the index names, and every tensor the index names must be there: a folder whose
    index and files disagree would load differently in ``from_pretrained`` than here.
    """
    if len(shards) == 1 and weight_map is None:
        return read_checkpoint(shards[0][1], limits=limits, module_classes=module_classes)
    merged: dict[str, torch.Tensor] = {}
    formats = set()
    for name, path in shards:
        loaded = read_checkpoint(path, limits=limits, module_classes=module_classes)
        formats.add(loaded.format)
        tensors = _flat_tensors(loaded.content, name)
        for key, tensor in tensors.items():
            if key in merged:
                raise UnreadableCheckpoint(
                    f"The tensor '{key[:200]}' is in more than one shard (again in '{name}').",
                    {"tensor": key[:200], "file": name},
                )
            if weight_map is not None and weight_map.get(key) != name:
                raise UnreadableCheckpoint(
                    f"The tensor '{key[:200]}' is in '{name}' but the index puts it in "
                    f"'{weight_map.get(key)}'; send the index written with these shards.",
                    {"tensor": key[:200], "file": name, "index": weight_map.get(key)},
                )
            merged[key] = tensor
        if len(merged) > limits.max_tensors:
            raise LimitExceeded(
                f"The shards hold more than {limits.max_tensors} tensors.",
                {"limit": "max_tensors", "value": limits.max_tensors},
            )
    if len(formats) > 1:
        raise UnreadableCheckpoint(f"The shards mix formats ({', '.join(sorted(formats))}); send one format.")
    if weight_map is not None:
        absent = sorted(set(weight_map) - set(merged))
        if absent:
            raise UnreadableCheckpoint(
                f"The index names {len(absent)} tensors that no shard holds (first: '{absent[0][:200]}').",
                {"missing": [key[:200] for key in absent[:64]]},
            )
    return LoadedCheckpoint(format=formats.pop(), content=merged)


def _flat_tensors(content: Any, name: str) -> dict[str, torch.Tensor]:
    if isinstance(content, Mapping) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in content.items()
    ):
        return dict(content)
    raise UnreadableCheckpoint(
        f"The shard '{name}' is not a state_dict (a mapping of names to tensors), as save_pretrained writes.",
        {"file": name},
    )
