"""What an architecture is: a config schema, a constructor and example inputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
    # Integer inputs (token ids) are drawn from [0, high).
    high: int | None = None
    # Sizes used for symbolic dimensions other than "batch" when making example inputs.
    example_dims: Mapping[str, int] = field(default_factory=dict)

    def example(
        self, batch_size: int, generator: torch.Generator, dims: Mapping[str, int] | None = None
    ) -> torch.Tensor:
        """A random tensor of this shape; ``dims`` sizes symbolic dimensions ahead of ``example_dims``."""
        shape = [self._resolve(dim, batch_size, dims or {}) for dim in self.shape]
        dtype = _DTYPES[self.dtype]
        if dtype.is_floating_point:
            return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)
        return torch.randint(0, self.high or 2, shape, generator=generator, dtype=dtype)

    def _resolve(self, dim: int | str, batch_size: int, dims: Mapping[str, int]) -> int:
        if isinstance(dim, int):
            return dim
        if dim == "batch":
            return batch_size
        return dims.get(dim, self.example_dims.get(dim, 4))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


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
