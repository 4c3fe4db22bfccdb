"""What an architecture is: a config schema, a constructor and example inputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from app.errors import InvalidConfig

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
}


@dataclass(frozen=True)
class InputSpec:
    """One forward() argument. A shape entry is an int or a symbolic name such as ``"batch"``."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    # Integer inputs (token ids) are drawn from [low, high).
    high: int | None = None
    # Sizes used for symbolic dimensions other than "batch" when making example inputs.
    example_dims: Mapping[str, int] = field(default_factory=dict)
    low: int = 0

    def example(
        self, batch_size: int, generator: torch.Generator, dims: Mapping[str, int] | None = None
    ) -> torch.Tensor:
        """A random tensor of this shape; ``dims`` sizes symbolic dimensions ahead of ``example_dims``."""
        shape = [self._resolve(dim, batch_size, dims or {}) for dim in self.shape]
        dtype = _DTYPES[self.dtype]
        if dtype.is_floating_point:
            return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)
        return torch.randint(self.low, self.high or self.low + 2, shape, generator=generator, dtype=dtype)

    def _resolve(self, dim: int | str, batch_size: int, dims: Mapping[str, int]) -> int:
        if isinstance(dim, int):
            return dim
        if dim == "batch":
            return batch_size
        return dims.get(dim, self.example_dims.get(dim, 4))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def to_data(self) -> dict[str, Any]:
        """Everything needed to rebuild it (stored with a registration, sent to the ingest child)."""
        return {
            **self.describe(),
            "high": self.high,
            "low": self.low,
            "example_dims": dict(self.example_dims),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> InputSpec:
        return cls(
            name=str(data["name"]),
            shape=tuple(data["shape"]),
            dtype=str(data.get("dtype", "float32")),
            high=data.get("high"),
            example_dims=dict(data.get("example_dims") or {}),
            low=int(data.get("low") or 0),
        )


INPUT_DTYPES = frozenset(_DTYPES)


Source = Literal["builtin", "plugin", "registered"]


@dataclass(frozen=True)
class Registration:
    """An architecture registered over HTTP: plain data, kept in the database and sent to ingest children.

    ``inputs`` are the example inputs (declared or derived at registration), as ``InputSpec.to_data``.
    """

    id: str
    name: str
    library: str
    description: str
    config: dict[str, Any] | None
    factory: str | None
    kwargs: dict[str, Any] | None
    inputs: list[dict[str, Any]]
    parameters: int


ModuleFactory = Callable[[Any], nn.Module]
InputsFactory = Callable[[Any], list[InputSpec]]


@dataclass(frozen=True)
class Architecture:
    """A registered model class: uploads are loaded into ``build(config)`` and run on ``example_inputs``."""

    name: str
    description: str
    config_model: type[BaseModel]
    factory: ModuleFactory
    input_specs: InputsFactory
    # Classes a whole-module pickle of this architecture may name (besides allow-listed torch.nn ones).
    module_classes: tuple[type[nn.Module], ...] = ()
    source: Source = "builtin"
    # The library a registered architecture comes from (None for built-in and plugin code).
    library: str | None = None
    registration: Registration | None = None

    @cached_property
    def parameters(self) -> int:
        """Parameters of the model its default config builds (counted on the meta device, tied ones once)."""
        if self.registration is not None:
            return self.registration.parameters
        try:
            with torch.device("meta"):
                module = self.build(self.default_config)
        except Exception:
            # A plugin whose module cannot be built on the meta device is still listed (uploads build it
            # for real); its size is then unknown.
            return 0
        return count_parameters(module)

    @property
    def config_schema(self) -> dict[str, Any]:
        return self.config_model.model_json_schema()

    @property
    def default_config(self) -> dict[str, Any]:
        return self.config_model().model_dump(mode="json")

    def effective_config(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """``default_config`` updated with what was given, validated; raises ``InvalidConfig``."""
        merged = {**self.default_config, **(given or {})}
        try:
            return self.config_model.model_validate(merged).model_dump(mode="json")
        except ValidationError as exc:
            errors = [{"loc": [str(p) for p in err["loc"]], "message": err["msg"]} for err in exc.errors()]
            first = errors[0]
            where = ".".join(first["loc"]) or "config"
            raise InvalidConfig(
                f"Invalid config for architecture '{self.name}': {where}: {first['message']}.",
                {"errors": errors},
            ) from None

    def parsed_config(self, config: Mapping[str, Any]) -> BaseModel:
        return self.config_model.model_validate(dict(config))

    def build(self, config: Mapping[str, Any]) -> nn.Module:
        return self.factory(self.parsed_config(config))

    def inputs(self, config: Mapping[str, Any]) -> list[InputSpec]:
        return self.input_specs(self.parsed_config(config))

    def example_inputs(
        self,
        config: Mapping[str, Any],
        batch_size: int = 2,
        seed: int = 0,
        dims: Mapping[str, int] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Random inputs; ``dims`` sizes symbolic dimensions other than ``batch`` (e.g. ``{"sequence": 16}``)."""
        generator = torch.Generator().manual_seed(seed)
        return tuple(spec.example(batch_size, generator, dims) for spec in self.inputs(config))


def count_parameters(module: nn.Module) -> int:
    """Distinct parameters (tied ones counted once); works on the meta device."""
    return sum(p.numel() for p in module.parameters())
