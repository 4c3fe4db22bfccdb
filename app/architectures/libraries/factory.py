"""Any other operator-allowed library: a named model constructor called with JSON keyword arguments.

``factory`` is a dotted name inside the library (``models.resnet18`` in ``torchvision``, a model name
for ``timm``, ``nn.Linear`` in ``torch``). It must name a model builder the library lists (torchvision's
``list_models``, timm's ``list_models``) or an ``nn.Module`` class: never an arbitrary function, which
could do anything with its arguments. Pretrained weights are never downloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from app.architectures.libraries import Recipe
from app.architectures.spec import InputSpec
from app.errors import InvalidArchitecture

_PART = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
_MODULE = re.compile(r"^[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63})*$")
# Keyword arguments that would fetch weights; builders get them forced off instead.
_DOWNLOADS = (
    "weights",
    "pretrained",
    "weights_backbone",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "checkpoint_path",
    "pretrained_model_name_or_path",
)


class FactoryLibrary:
    def __init__(self, name: str) -> None:
        self.name = name

    def require(self) -> None:
        if not _MODULE.fullmatch(self.name):
            raise InvalidArchitecture(f"'{self.name[:100]}' is not a Python package name.")
        try:
            found = importlib.util.find_spec(self.name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise _not_installed(self.name)

    def check(self, recipe: Recipe) -> None:
        if recipe.config:
            raise InvalidArchitecture(
                f"A {self.name} architecture is a factory with kwargs; `config` is for transformers.",
                {"library": self.name},
            )
        if not isinstance(recipe.factory, str):
            raise InvalidArchitecture(
                f"A {self.name} architecture needs `factory`: the name of a model constructor of {self.name}.",
                {"library": self.name},
            )
        given = [key for key in _DOWNLOADS if (recipe.kwargs or {}).get(key)]
        if given:
            raise InvalidArchitecture(
                f"kwargs may not ask for pretrained weights ('{given[0]}'); upload the weights as a version.",
                {"key": given[0]},
            )
        self._constructor(recipe.factory)

    def build(self, recipe: Recipe, input_names: Sequence[str]) -> nn.Module:
        assert recipe.factory is not None
        constructor = self._constructor(recipe.factory)
        try:
            module = constructor(**(recipe.kwargs or {}))
        except MemoryError:
            raise  # the ingest child's limit: answered as such
        except Exception as exc:
            raise InvalidArchitecture(
                f"{self.name}.{recipe.factory} refused the kwargs: {str(exc)[:300]}",
                {"factory": recipe.factory},
            ) from None
        if not isinstance(module, nn.Module):
            raise InvalidArchitecture(f"{self.name}.{recipe.factory} did not build an nn.Module.")
        return module

    def derive_inputs(self, recipe: Recipe, module: nn.Module) -> list[InputSpec] | None:
        if self.name in ("torchvision", "timm"):
            size = getattr(module, "default_cfg", {}).get("input_size", (3, 224, 224))
            return [InputSpec("images", ("batch", *size))]
        return None

    def fit_inputs(self, recipe: Recipe, module: nn.Module, declared: Sequence[InputSpec]) -> list[InputSpec]:
        return list(declared)

    def describe(self, recipe: Recipe) -> str:
        return f"{self.name}.{recipe.factory}"

    def prepare_export(self, module: nn.Module) -> dict[str, Any]:
        return {}

    def _library(self) -> Any:
        if not _MODULE.fullmatch(self.name):
            raise InvalidArchitecture(f"'{self.name[:100]}' is not a Python package name.")
        try:
            return importlib.import_module(self.name)
        except ImportError:
            raise _not_installed(self.name) from None

    def _constructor(self, factory: str) -> Callable[..., Any]:
        parts = factory.split(".")
        if not all(_PART.fullmatch(part) for part in parts):
            raise InvalidArchitecture(
                f"'{factory[:200]}' is not a constructor name (dotted names, no leading underscores).",
                {"factory": factory[:200]},
            )
        library = self._library()
        if self.name == "torchvision":
            return _torchvision(library, parts[-1], factory)
        if self.name == "timm":
            return _timm(library, factory)
        found: Any = library
        for part in parts:
            found = getattr(found, part, None)
        if isinstance(found, type) and issubclass(found, nn.Module):
            return found
        raise InvalidArchitecture(
            f"{self.name}.{factory[:200]} is not an nn.Module class of {self.name}.",
            {"factory": factory[:200]},
        )


def _not_installed(name: str) -> InvalidArchitecture:
    return InvalidArchitecture(
        f"The library '{name}' is allowed but not installed on this server.",
        {"library": name, "installed": False},
    )


def _torchvision(library: Any, name: str, factory: str) -> Callable[..., Any]:
    models = importlib.import_module(f"{library.__name__}.models")
    if name not in models.list_models():
        raise InvalidArchitecture(
            f"'{factory[:200]}' is not a torchvision model (torchvision.models.list_models()).",
            {"factory": factory[:200]},
        )
    builder = models.get_model_builder(name)
    return lambda **kwargs: builder(**{**kwargs, "weights": None})


def _timm(library: Any, factory: str) -> Callable[..., Any]:
    name = factory.removeprefix("create_model.")
    if name not in library.list_models():
        raise InvalidArchitecture(
            f"'{factory[:200]}' is not a timm model (timm.list_models()).", {"factory": factory[:200]}
        )
    return lambda **kwargs: library.create_model(name, **{**kwargs, "pretrained": False})
