"""Read the tensors of a module tree rebuilt from a pickle, without calling any of its methods.

``module.state_dict()`` would run hooks and overridable methods whose values came from the file;
this walks the three dicts that hold a module's state and checks every type on the way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from app.errors import UnreadableCheckpoint

MAX_DEPTH = 64
_HOOK_ATTRIBUTES = (
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    _collect(module, "", found, 0)
    return found


def _collect(module: object, prefix: str, found: dict[str, torch.Tensor], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnreadableCheckpoint(f"The pickled module is nested more than {MAX_DEPTH} levels deep.")
    state = object.__getattribute__(module, "__dict__")
    for hooks in _HOOK_ATTRIBUTES:
        if state.get(hooks):
            raise UnreadableCheckpoint(
                f"The pickled module '{prefix or 'root'}' carries state_dict hooks; save model.state_dict() instead."
            )
    non_persistent = state.get("_non_persistent_buffers_set", set())
    if not isinstance(non_persistent, set | frozenset):
        _malformed(prefix, "_non_persistent_buffers_set")
    for attribute, kind in (("_parameters", torch.Tensor), ("_buffers", torch.Tensor)):
        entries = _mapping(state.get(attribute, {}), prefix, attribute)
        for name, value in entries.items():
            if value is None or (attribute == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, kind):
                _malformed(prefix, f"{attribute}[{name!r}]")
            found[prefix + name] = value.detach() if isinstance(value, nn.Parameter) else value
    for name, child in _mapping(state.get("_modules", {}), prefix, "_modules").items():
        if child is None:
            continue
        if not isinstance(child, nn.Module):
            _malformed(prefix, f"_modules[{name!r}]")
        _collect(child, f"{prefix}{name}.", found, depth + 1)


def _mapping(value: Any, prefix: str, attribute: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        _malformed(prefix, attribute)
    mapping: Mapping[str, Any] = value
    return mapping


def _malformed(prefix: str, where: str) -> None:
    raise UnreadableCheckpoint(
        f"The pickled module is malformed at '{prefix}{where}'; save model.state_dict() instead."
    )
