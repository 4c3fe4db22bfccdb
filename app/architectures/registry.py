"""Which architectures this server knows, behind one interface, from three sources:

- built-in (``app.architectures.builtin``) and plugins (the ``weightvault.architectures`` entry point
  group and the modules named in ``WEIGHTVAULT_ARCHITECTURE_MODULES``): code, read once at start;
- registered over HTTP: rows in the database, read at each lookup (``RegistrationSource``), so every
  API process and worker sees a registration at once. A process without the database (the ingest
  child) is handed the registration with the request instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Protocol

from app.architectures.builtin import ARCHITECTURES as BUILTIN
from app.architectures.spec import Architecture, Registration
from app.errors import ArchitectureNotFound

ENTRY_POINT_GROUP = "weightvault.architectures"
_CACHED = 256


class RegistrationSource(Protocol):
    """Registered architectures (the database, in the API and worker processes)."""

    def find(self, name: str) -> Registration | None: ...

    def all(self) -> list[Registration]: ...


class ArchitectureRegistry:
    def __init__(
        self, architectures: Iterable[Architecture], registrations: RegistrationSource | None = None
    ) -> None:
        self._by_name: dict[str, Architecture] = {}
        for arch in architectures:
            if arch.name in self._by_name:
                raise ValueError(f"architecture '{arch.name}' is registered twice")
            self._by_name[arch.name] = arch
        self.registrations = registrations
        # Built Architecture objects per registration id (a re-registration under a name has a new id).
        self._built: OrderedDict[str, Architecture] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, *, registration: Registration | None = None) -> Architecture:
        """The architecture ``name``; ``registration`` is its record when the caller already has it
        (the ingest child, which has no database)."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        if registration is None and self.registrations is not None:
            registration = self.registrations.find(name)
        if registration is not None and registration.name == name:
            return self._of(registration)
        raise ArchitectureNotFound(
            f"No architecture named '{name[:200]}'; GET /v1/architectures lists the registered ones.",
            {"architecture": name[:200]},
        )

    def warm(self) -> None:
        """Count the code architectures' parameters now (cached on each), so listings answer at once."""
        for arch in self._by_name.values():
            _ = arch.parameters

    def is_code(self, name: str) -> bool:
        """Built-in or plugin: defined by code, so not removable over HTTP."""
        return name in self._by_name

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self._by_name:
            return True
        return self.registrations is not None and self.registrations.find(name) is not None

    def all(self) -> list[Architecture]:
        found = dict(self._by_name)
        if self.registrations is not None:
            for registration in self.registrations.all():
                found.setdefault(registration.name, self._of(registration))
        return [found[name] for name in sorted(found)]

    def _of(self, registration: Registration) -> Architecture:
        from app.architectures.libraries import architecture_of

        with self._lock:
            built = self._built.get(registration.id)
            if built is not None:
                self._built.move_to_end(registration.id)
                return built
        built = architecture_of(registration)
        with self._lock:
            self._built[registration.id] = built
            while len(self._built) > _CACHED:
                self._built.popitem(last=False)
        return built


def _from_object(obj: object, origin: str) -> list[Architecture]:
    found = obj() if callable(obj) and not isinstance(obj, Architecture) else obj
    if isinstance(found, Architecture):
        return [_as_plugin(found)]
    if isinstance(found, list | tuple) and all(isinstance(a, Architecture) for a in found):
        return [_as_plugin(a) for a in found]
    raise TypeError(f"{origin} did not give Architecture objects (an ARCHITECTURES list of them)")


def _as_plugin(arch: Architecture) -> Architecture:
    return dataclasses.replace(arch, source="plugin") if arch.source == "builtin" else arch


class PluginNotFound(ImportError):
    """A module named in ``WEIGHTVAULT_ARCHITECTURE_MODULES`` cannot be imported."""


def import_plugin(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # the plugin itself was found; something it imports is missing
        raise PluginNotFound(
            f"WEIGHTVAULT_ARCHITECTURE_MODULES names '{module_name}', which Python cannot import: install "
            "its package into the server's environment or add its folder to PYTHONPATH (the folder the "
            "server starts in is not searched); see docs/architectures.md."
        ) from None


def load_registry(
    modules: Iterable[str] = (), registrations: RegistrationSource | None = None
) -> ArchitectureRegistry:
    """Built-ins, then every ``weightvault.architectures`` entry point, then ``ARCHITECTURES`` of each
    module; registered ones from ``registrations`` at each lookup."""
    found: list[Architecture] = list(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found += _from_object(entry.load(), f"entry point {entry.name}")
    for module_name in modules:
        module = import_plugin(module_name)
        found += _from_object(getattr(module, "ARCHITECTURES", None), f"module {module_name}")
    return ArchitectureRegistry(found, registrations)
