"""Bound the shape of what a pickle built before anything recursive (layout, torch.save) walks it."""

from __future__ import annotations

from typing import Any

from torch import nn

from app.errors import UnreadableCheckpoint

MAX_DEPTH = 100


def check_structure(content: Any, max_depth: int = MAX_DEPTH) -> None:
    """Refuse containers nested deeper than ``max_depth`` or holding themselves.

    The walk is iterative and visits each container once, so a pickle that shares one list many times
    (a DAG with exponentially many paths) costs what it sent, not what it describes.
    """
    depth_of: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, int]] = [(content, 0)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, _Leave):
            on_path.discard(obj.key)
            continue
        children = _children(obj)
        if children is None:
            continue
        key = id(obj)
        if key in on_path:
            raise UnreadableCheckpoint(
                "The checkpoint holds a container that contains itself; torch.save of a model never writes one."
            )
        if depth_of.get(key, -1) >= depth:
            continue
        if depth > max_depth:
            raise UnreadableCheckpoint(
                f"The checkpoint nests containers more than {max_depth} levels deep; that is not model state."
            )
        depth_of[key] = depth
        on_path.add(key)
        stack.append((_Leave(key), depth))
        stack.extend((child, depth + 1) for child in children)


class _Leave:
    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key


def _children(obj: Any) -> list[Any] | None:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values(), *getattr(obj, "__dict__", {}).values()]
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    if isinstance(obj, nn.Module):
        return list(object.__getattribute__(obj, "__dict__").values())
    return None
