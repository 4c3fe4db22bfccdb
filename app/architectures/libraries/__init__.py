"""Where registered architectures come from: one module per library behind one small seam.

A library turns a registration's data (a config, or a factory name and its keyword arguments) into a
model class instance and tells which example inputs it takes. ``transformers`` has its own module
(``libraries/transformers.py``); every other operator-allowed library goes through ``libraries/factory.py``.
The next library with its own rules is a new module here and one line in ``library_for``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict
from torch import nn

from app.architectures.spec import Architecture, InputSpec, Registration
from app.errors import InvalidArchitecture


class Recipe(Protocol):
    """What a library reads from a registration (a ``Registration``, or one being checked)."""

    @property
    def library(self) -> str: ...
    @property
    def config(self) -> dict[str, Any] | None: ...
    @property
    def factory(self) -> str | None: ...
    @property
    def kwargs(self) -> dict[str, Any] | None: ...


class ModelLibrary(Protocol):
    """The seam: check a recipe, build its module, tell its example inputs."""

    def require(self) -> None:
        """Refuse (``InvalidArchitecture``) when the library is not installed; imports nothing."""

    def check(self, recipe: Recipe) -> None:
        """Refuse (``InvalidArchitecture``) a recipe that cannot be built safely; nothing runs from it."""

    def build(self, recipe: Recipe, input_names: Sequence[str]) -> nn.Module:
        """A fresh module on the current torch device (meta to count). Its forward takes the example
        inputs positionally, in the order of ``input_names``."""

    def derive_inputs(self, recipe: Recipe, module: nn.Module) -> list[InputSpec] | None:
        """The example inputs the module takes, or None when they cannot be told from the model."""

    def fit_inputs(self, recipe: Recipe, module: nn.Module, declared: Sequence[InputSpec]) -> list[InputSpec]:
        """Declared inputs completed for this model (token id ranges); refuse ones it cannot take."""

    def describe(self, recipe: Recipe) -> str:
        """A default description."""

    def prepare_export(self, module: nn.Module) -> dict[str, Any]:
        """Make ``module`` exportable to ONNX in place; the keyword arguments its forward then takes."""


def library_for(name: str) -> ModelLibrary:
    if name == "transformers":
        from app.architectures.libraries import transformers

        return transformers.TransformersLibrary()
    from app.architectures.libraries import factory

    return factory.FactoryLibrary(name)


def export_arguments(architecture: Architecture, module: nn.Module) -> dict[str, Any]:
    """What exporting ``architecture``'s module needs from its library (none for built-ins and plain code)."""
    if architecture.library is None:
        return {}
    return library_for(architecture.library).prepare_export(module)


def check_allowed(name: str, allowed: Sequence[str]) -> ModelLibrary:
    if name not in allowed:
        raise InvalidArchitecture(
            f"The library '{name[:100]}' is not allowed on this server; it allows "
            f"{', '.join(allowed) or 'none'} (the operator's setting WEIGHTVAULT_ARCHITECTURE_LIBRARIES).",
            {"library": name[:100], "allowed": list(allowed)},
        )
    library = library_for(name)
    library.require()
    return library


class NoOptions(BaseModel):
    """Registered architectures take no per-model options: the registration fixes the model."""

    model_config = ConfigDict(extra="forbid")


def architecture_of(registration: Registration) -> Architecture:
    """The ``Architecture`` a registration describes; its module is built only when asked."""
    library = library_for(registration.library)
    specs = [InputSpec.from_data(data) for data in registration.inputs]
    names = [spec.name for spec in specs]

    def build(_options: Any) -> nn.Module:
        return library.build(registration, names)

    return Architecture(
        name=registration.name,
        description=registration.description,
        config_model=NoOptions,
        factory=build,
        input_specs=lambda _options: list(specs),
        source="registered",
        library=registration.library,
        registration=registration,
    )


def find_key(value: Any, key: str, path: str = "") -> str | None:
    """Where ``key`` appears as a mapping key anywhere in ``value`` (a JSON document), or None."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if k == key:
                return here
            found = find_key(v, key, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_key(item, key, f"{path}[{index}]")
            if found is not None:
                return found
    return None
