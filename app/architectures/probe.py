"""Check a registration without keeping anything: build its model on the meta device, count its
parameters, fix its example inputs. Runs in an ingest child process (limits on memory and time), since
a library's constructor may allocate real memory from config values even on the meta device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from app.architectures.libraries import ModelLibrary, library_for
from app.architectures.spec import INPUT_DTYPES, InputSpec, count_parameters
from app.errors import InvalidArchitecture


@dataclass(frozen=True)
class Recipe:
    """What a registration asks for (the library must already be allowed)."""

    library: str
    config: dict[str, Any] | None
    factory: str | None
    kwargs: dict[str, Any] | None
    # Declared example inputs as ``{name, shape, dtype}`` dicts, or None to derive them.
    inputs: list[dict[str, Any]] | None
    max_parameters: int


@dataclass(frozen=True)
class Probed:
    parameters: int
    inputs: list[dict[str, Any]]
    description: str


def probe(recipe: Recipe) -> Probed:
    """``Probed``, or ``InvalidArchitecture`` saying what to change."""
    library = library_for(recipe.library)
    library.check(recipe)
    module = _build_on_meta(library, recipe)
    parameters = count_parameters(module)
    if parameters > recipe.max_parameters:
        raise InvalidArchitecture(
            f"This model would have {parameters:,} parameters, more than this server's limit of "
            f"{recipe.max_parameters:,} (WEIGHTVAULT_MAX_ARCHITECTURE_PARAMETERS).",
            {"parameters": parameters, "limit": recipe.max_parameters},
        )
    inputs = _inputs(library, recipe, module)
    return Probed(
        parameters=parameters,
        inputs=[spec.to_data() for spec in inputs],
        description=library.describe(recipe),
    )


def _build_on_meta(library: ModelLibrary, recipe: Recipe) -> nn.Module:
    try:
        with torch.device("meta"):
            return library.build(recipe, [])
    except (InvalidArchitecture, MemoryError):
        raise
    except Exception as exc:
        raise InvalidArchitecture(
            f"The model could not be built from this registration: {type(exc).__name__}: {str(exc)[:300]}",
            {"error": str(exc)[:1000]},
        ) from None


def _inputs(library: ModelLibrary, recipe: Recipe, module: nn.Module) -> list[InputSpec]:
    if recipe.inputs is None:
        derived = library.derive_inputs(recipe, module)
        if not derived:
            raise InvalidArchitecture(
                "The example inputs cannot be told from this model; declare them in `inputs` "
                '(e.g. [{"name": "x", "shape": ["batch", 10], "dtype": "float32"}]).',
                {"inputs": None},
            )
        return derived
    if not recipe.inputs:
        raise InvalidArchitecture("`inputs` must declare at least one input.", {"inputs": []})
    specs = [_declared(spec) for spec in recipe.inputs]
    if len({spec.name for spec in specs}) != len(specs):
        raise InvalidArchitecture(
            "Every declared input needs its own name.", {"inputs": [s.name for s in specs]}
        )
    return library.fit_inputs(recipe, module, specs)


def _declared(data: dict[str, Any]) -> InputSpec:
    name, shape, dtype = data["name"], data["shape"], data.get("dtype", "float32")
    if dtype not in INPUT_DTYPES:
        raise InvalidArchitecture(
            f"Input '{name}' has dtype '{dtype}'; use one of {', '.join(sorted(INPUT_DTYPES))}.",
            {"input": name, "dtypes": sorted(INPUT_DTYPES)},
        )
    bad = [d for d in shape if (isinstance(d, int) and not 1 <= d <= 65_536) or d == ""]
    if bad:
        raise InvalidArchitecture(
            f"Input '{name}' has a dimension {bad[0]!r}; sizes are 1-65536 or a symbolic name.",
            {"input": name},
        )
    return InputSpec(name, tuple(shape), dtype)


def declared_inputs(inputs: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Request bodies' declared inputs as plain dicts (what crosses to the child)."""
    if inputs is None:
        return None
    return [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in inputs]
