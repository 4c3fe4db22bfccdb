"""Which architectures this server knows: the built-ins, entry points and modules named in settings."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

from app.architectures.builtin import ARCHITECTURES as BUILTIN
from app.architectures.spec import Architecture
from app.errors import ArchitectureNotFound

ENTRY_POINT_GROUP = "weightvault.architectures"


class ArchitectureRegistry:
    def __init__(self, architectures: Iterable[Architecture]) -> None:
        self._by_name: dict[str, Architecture] = {}
        for arch in architectures:
            if arch.name in self._by_name:
                raise ValueError(f"architecture '{arch.name}' is registered twice")
            self._by_name[arch.name] = arch

    def get(self, name: str) -> Architecture:
        try:
            return self._by_name[name]
        except KeyError:
            raise ArchitectureNotFound(
                f"No architecture named '{name}'; GET /v1/architectures lists the registered ones.",
                {"architecture": name, "known": sorted(self._by_name)},
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def all(self) -> list[Architecture]:
        return [self._by_name[name] for name in sorted(self._by_name)]


def _from_object(obj: object, origin: str) -> list[Architecture]:
    found = obj() if callable(obj) and not isinstance(obj, Architecture) else obj
    if isinstance(found, Architecture):
        return [found]
    if isinstance(found, list | tuple) and all(isinstance(a, Architecture) for a in found):
        return list(found)
    raise TypeError(f"{origin} did not give Architecture objects")


def load_registry(modules: Iterable[str] = ()) -> ArchitectureRegistry:
    """Built-ins, then every ``weightvault.architectures`` entry point, then ``ARCHITECTURES`` of each module."""
    found: list[Architecture] = list(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found += _from_object(entry.load(), f"entry point {entry.name}")
    for module_name in modules:
        module = importlib.import_module(module_name)
        found += _from_object(module.ARCHITECTURES, f"module {module_name}")
    return ArchitectureRegistry(found)
